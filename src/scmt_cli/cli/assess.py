"""``scmt assess``: compatibility findings and a recommended method per VM.

Exit codes: 0 every VM ready, 1 warnings only, 20 some VM blocked, 21 the
network preflight found a required port not open, 22 some VM's assessment is
incomplete (the inventory lacks data a blocking check needs); 3 unreadable inventory,
5 missing vCenter credentials, 10-12 vCenter unreachable / login / TLS.  The full
report is printed before the exit code is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import duration, url_value
from scmt_cli.cli.context import current, line
from scmt_cli.errors import UsageError

_SEV_STYLE = {"blocker": "bold red", "warning": "yellow", "info": "dim"}
_VERDICT_STYLE = {"ready": "green", "warnings": "yellow", "blocked": "bold red", "incomplete": "magenta"}


def assess(
    plan: Annotated[Optional[Path], typer.Argument(help="Migration plan (optional).", metavar="PLAN")] = None,
    inventory: Annotated[
        Optional[Path],
        typer.Option("--inventory", "-i", help="RVTools export (.xlsx, .csv or a directory of CSVs) or lab .yaml.",
                     metavar="FILE"),
    ] = None,
    lab: Annotated[Optional[Path], typer.Option("--lab", help="The fake vCenter's lab file.", metavar="FILE")] = None,
    vcenter: Annotated[
        Optional[str], typer.Option("--vcenter", help="Assess a live vCenter (https://host; default: $GOVC_URL "
                                    "when no PLAN or --inventory is given).", metavar="URL", callback=url_value)
    ] = None,
    vcenter_user: Annotated[Optional[str], typer.Option("--vcenter-user", help="vCenter user name.",
                                                                      metavar="USER")] = None,
    vcenter_password_file: Annotated[
        Optional[str], typer.Option("--vcenter-password-file", help="File holding the vCenter password.",
                                    metavar="FILE")
    ] = None,
    vcenter_thumbprint: Annotated[
        Optional[str], typer.Option("--vcenter-thumbprint", help="Pin the vCenter certificate (SHA-256).",
                                    metavar="SHA256")
    ] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the vCenter certificate (labs).")] = False,
    method: Annotated[
        Optional[str],
        typer.Option("--method", help="Assess under this method: managed | agentless | agent | hot-backup.",
                     metavar="METHOD"),
    ] = None,
    downtime: Annotated[
        Optional[str], typer.Option("--downtime", help="Downtime tolerance for the recommendation, e.g. 5m.",
                                    metavar="DURATION")
    ] = None,
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    no_network: Annotated[bool, typer.Option("--no-network", help="Skip the network port preflight.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Preflight connect timeout (default: 3s).",
                                           metavar="DURATION", parser=duration(0.1), show_default=False)] = 3.0,
    details: Annotated[bool, typer.Option("--details", help="Every finding with its remedy.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table | csv (--json for JSON).", metavar="FORMAT")] = "table",
) -> None:
    """Check OS, firmware, disks, devices, versions and ports; recommend a method."""
    from scmt_cli.domain.units import parse_duration
    from scmt_cli.services.assess import AssessRequest
    from scmt_cli.services.assess import assess as run

    if fmt not in ("table", "csv"):
        raise UsageError(f"--format {fmt!r}: expected table or csv")
    if inventory is not None and lab is not None:
        raise UsageError("give --inventory or --lab, not both")
    tolerance = None
    if downtime is not None:
        try:
            tolerance = parse_duration(downtime)
        except ValueError as exc:
            raise UsageError(f"--downtime: {exc}") from None
    ui = current()
    req = AssessRequest(
        plan=plan,
        inventory=inventory or lab,
        vcenter=vcenter,
        method=method,
        downtime_seconds=tolerance,
        vms=tuple(vm or ()),
        network=not no_network,
        timeout=timeout,
        vcenter_user=vcenter_user,
        vcenter_password_file=vcenter_password_file,
        vcenter_thumbprint=vcenter_thumbprint,
        insecure=insecure,
    )
    result = run(req, ui.reporter)
    if fmt == "csv":
        ui.finish(result, lambda console, r: render_csv(console, r, details), quiet=quiet_lines)
    else:
        ui.finish(result, lambda console, r: render(console, r, details), quiet=quiet_lines)


def quiet_lines(result: Any) -> list[tuple[Any, str]]:
    """Under --quiet: an error line per blocked or incomplete VM and failed preflight check, a warning line
    per VM with warnings (what the exit code says, in words; the table and CSV are not printed)."""
    out: list[tuple[Any, str]] = []
    for a in result.vms:
        ids = {sev: ", ".join(dict.fromkeys(f.id for f in a.findings if f.severity == sev))
               for sev in ("blocker", "warning")}
        if a.verdict == "blocked":
            out.append(("error", f"{a.name}: blocked for method {a.method} by {ids['blocker']}"))
        elif a.verdict == "incomplete":
            out.append(("error", f"{a.name}: assessment incomplete: {'; '.join(a.not_assessed)}"))
        elif a.verdict == "warnings":
            out.append(("warning", f"{a.name}: warnings for method {a.method}: {ids['warning']}"))
    for p in result.preflight:
        for r in p.results:
            if r.status not in ("open", "not_checked"):
                out.append(("error", f"preflight ({p.method}): {r.check.src} -> {r.check.host}:{r.check.port} "
                                     f"({r.check.role}) {r.status}: {r.detail}"))
    return out


def render_csv(console: Console, result: Any, details: bool) -> None:
    """One row per VM, or per finding with ``--details``."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if details:
        w.writerow(["vm", "verdict", "method", "severity", "id", "subject", "message", "remedy"])
        for a in result.vms:
            for f in a.findings:
                w.writerow([a.name, a.verdict, a.method, f.severity, f.id, f.subject, f.message, f.remedy])
    else:
        w.writerow(["vm", "os", "verdict", "method", "recommended_method", "blockers", "warnings", "finding_ids",
                    "reason"])
        for a in result.vms:
            ids = ";".join(f.id for f in a.findings if f.severity != "info")
            w.writerow([a.name, a.os or "", a.verdict, a.method, a.recommended_method, a.count("blocker"),
                        a.count("warning"), ids, a.reason])
    console.file.write(buf.getvalue())
    console.file.flush()


def _table(console: Console, result: Any) -> Any:
    """The per-VM table, fitted to the console: whole names and rule ids, low-value columns dropped first.

    Preference: OS, verdict, method, recommended (only when it differs somewhere: the lines below
    the table say it too), blockers and warnings apart; narrower, the recommended and OS columns go,
    then blockers and warnings share one column (blockers first).  --format csv and --json keep all.
    """
    from rich.text import Text

    from scmt_cli.cli.tables import Column, fit_table, fits

    names = Column("VM", [a.name for a in result.vms])
    os_col = Column("OS", [a.os or "?" for a in result.vms], keep=2)
    verdicts = Column("verdict", [Text(a.verdict, style=_VERDICT_STYLE[a.verdict]) for a in result.vms])
    methods = Column("method", [a.method for a in result.vms])
    rec = Column("recommended", [a.recommended_method if a.recommended_method == a.method
                                 else Text(a.recommended_method, style="bold") for a in result.vms], keep=1)
    blockers = [list(dict.fromkeys(f.id for f in a.findings if f.severity == "blocker")) for a in result.vms]
    warns = [list(dict.fromkeys(f.id for f in a.findings if f.severity == "warning")) for a in result.vms]
    b_col = Column("blockers", [", ".join(ids) or "-" for ids in blockers])
    w_col = Column("warnings", [", ".join(ids) or "-" for ids in warns])
    differs = any(a.recommended_method != a.method for a in result.vms)
    merged = [Text(", ").join([*(Text(i, style="bold red") for i in b), *(Text(i) for i in w)]) or Text("-")
              for b, w in zip(blockers, warns, strict=True)]
    findings = Column("findings (blockers first)", merged)
    width = console.width
    for columns in ([names, os_col, verdicts, methods, *([rec] if differs else []), b_col, w_col],
                    [names, os_col, verdicts, methods, *([rec] if differs else []), findings]):
        if fits(width, columns):
            table, _ = fit_table(width, columns, title=f"Assessment of {result.source}")
            return table
    return _vm_list(result, blockers, warns)


def _vm_list(result: Any, blockers: list[list[str]], warns: list[list[str]]) -> Any:
    """A terminal too narrow for any table: one block per VM, each line wrapping between words."""
    from rich.console import Group
    from rich.text import Text

    lines: list[Any] = [Text(f"Assessment of {result.source}", style="bold")]
    for a, b, w in zip(result.vms, blockers, warns, strict=True):
        lines.append(Text.assemble((a.name, "bold"), " ", (a.verdict, _VERDICT_STYLE[a.verdict]), f" {a.method}"))
        if b:
            lines.append(Text.assemble("  blockers: ", (", ".join(b), "bold red")))
        if w:
            lines.append(Text(f"  warnings: {', '.join(w)}"))
    return Group(*lines)


def render(console: Console, result: Any, details: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(_table(console, result))
    c = result.counts()
    summary = Text.assemble(
        f"{c['vms']} VM(s): ", (f"{c['ready']} ready", "green"), ", ", (f"{c['warnings']} with warnings", "yellow"),
        ", ", (f"{c['blocked']} blocked", "bold red"))
    if c["incomplete"]:
        summary.append(", ").append(f"{c['incomplete']} incomplete", "magenta")
    console.print(summary.append(f", {c['skipped']} skipped"))
    if details:
        soft = not console.is_terminal  # wrapped on a terminal only: a saved report keeps one line per finding
        for a in result.vms:
            console.print(Text.assemble("\n", (a.name, "bold"), f" - {a.verdict} under {a.method}; recommended "
                                        f"{a.recommended_method}: {a.reason}"), highlight=False, soft_wrap=soft)
            for gap in a.not_assessed:
                console.print(Text.assemble("  ", ("not assessed", "magenta"), f": {gap}"), highlight=False,
                              soft_wrap=soft)
            for f in a.findings:
                style = _SEV_STYLE[f.severity]
                console.print(Text.assemble("  ", (f"{f.severity:<7}", style), f" {f.id}: {f.message}"),
                              highlight=False, soft_wrap=soft)
                line(console, f"          remedy: {f.remedy}", "dim")
    else:
        for a in result.vms:
            if a.recommended_method != a.method:
                line(console, f"{a.name}: recommended {a.recommended_method}: {a.reason}")
    for p in result.preflight:
        pt = Table(title=f"Network preflight ({p.method})")
        for col in ("from", "to", "port", "role", "status", "detail"):
            pt.add_column(col, overflow="fold")
        for r in p.results:
            style = {"open": "green", "not_checked": "dim"}.get(r.status, "bold red")
            port = f"{r.check.port}{'*' if r.check.sampled else ''}"
            pt.add_row(r.check.src, r.check.host, port, r.check.role, Text(r.status, style=style), r.detail)
        console.print(pt)
        if p.missing_roles:
            line(console, f"no address known for: {', '.join(p.missing_roles)} (not checked)")
    for s in result.skipped:
        line(console, f"skipped: {s}", "yellow")
    for n in result.notes:
        line(console, f"note: {n}", "dim")
