"""The help contract every command follows, applied once to the click command tree.

Each command's ``--help`` ends with the same three sections, built here from one
table so that no command can forget them:

* ``Global options`` (accepted before or after the subcommand);
* ``Exit codes`` the command can return, with their meaning from
  :data:`scmt_cli.errors.EXIT_CODES` (the one table of meanings);
* ``Examples``: one or two real command lines.

It also writes arguments the conventional way (``PLAN...``, ``SRC DST``, no
Python types) and completes fixed-choice option values and ``--vm`` names from
the plan on the command line.  A command added later gets its entry in
:data:`COMMANDS`; ``tests/cli/test_help_contract.py`` fails for a command that has none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import Any

from scmt_cli.errors import EXIT_CODES

GLOBAL_OPTIONS: tuple[tuple[str, str], ...] = (
    ("--json", "one JSON document on stdout (also on error), see 'scmt help json'"),
    ("--log-json", "stderr as JSON lines with a 'type' field"),
    ("-q, --quiet", "only warnings and errors"),
    ("-v, --verbose", "debug messages too"),
    ("--state PATH|URL", "state store: a SQLite file (default: $XDG_STATE_HOME/scmt/state.db) or "
                         "postgresql://user@host/db; env SCMT_STATE"),
    ("--debug", "tracebacks of internal errors"),
    ("--no-color", "no colours (NO_COLOR is honoured too)"),
)

# Every command may return these: usage error, bug, Ctrl-C, SIGTERM.
COMMON_CODES = (2, 70, 130)
# Commands that drive VMs of a plan share these (see README "Exit codes").
_PLAN_RUN = (0, 1, 3, 5, 10, 11, 12, 13, 14, 40, 41, 60, 143)


@dataclass(frozen=True)
class CommandDoc:
    codes: tuple[int, ...]
    examples: tuple[str, ...]


COMMANDS: dict[str, CommandDoc] = {
    "scmt": CommandDoc((), ("scmt assess -i rvtools.xlsx", "scmt demo")),
    "assess": CommandDoc((0, 1, 3, 5, 10, 11, 12, 20, 21, 22), (
        "scmt assess -i rvtools.xlsx --details",
        "GOVC_URL=https://vc.example.com/sdk GOVC_USERNAME=admin GOVC_PASSWORD=... scmt --json assess")),
    "plan": CommandDoc((0, 1), ("scmt plan init plan.yaml", "scmt plan validate plan.yaml -i lab.yaml")),
    "plan init": CommandDoc((0, 1), ("scmt plan init plan.yaml --method agentless",
                                     "scmt plan init plan.yaml --target libvirt")),
    "plan validate": CommandDoc((0, 1, 3, 20), ("scmt plan validate plan.yaml",
                                                "scmt plan validate *.yaml -i lab.yaml --strict")),
    "plan show": CommandDoc((0, 1, 3), ("scmt plan show plan.yaml",)),
    "plan estimate": CommandDoc((0, 1, 3), (
        "scmt plan estimate plan.yaml -i rvtools.xlsx", "scmt plan estimate --data 500GiB --bandwidth 300Mbit")),
    "plan schema": CommandDoc((0,), ("scmt plan schema", "scmt --json plan schema")),
    "sync": CommandDoc(_PLAN_RUN + (20, 30, 32, 33, 35, 42, 50), (
        "scmt sync plan.yaml --dry-run", "scmt sync plan.yaml --every 30m --until 06:00 --bandwidth 500Mbit")),
    "failover": CommandDoc(_PLAN_RUN + (20, 30, 31, 42, 50, 51, 52, 53), (
        "scmt failover plan.yaml --group erp --dry-run", "scmt failover plan.yaml --group erp --at 22:00")),
    "rollback": CommandDoc(_PLAN_RUN + (42, 50, 51), ("scmt rollback plan.yaml --vm web01",)),
    "migrate": CommandDoc(_PLAN_RUN + (20, 30, 31, 32, 33, 35, 42, 50, 51, 52), (
        "scmt migrate plan.yaml --vm web01 --dry-run", "scmt migrate plan.yaml --group erp --bandwidth 1Gbit")),
    "finalize": CommandDoc(_PLAN_RUN + (42, 50), ("scmt finalize plan.yaml --vm web01 --disable-cbt",
                                                  "scmt finalize plan.yaml --group erp")),
    "boot": CommandDoc((0, 1, 5, 14, 30, 31, 40, 41, 42, 50, 53), (
        "scmt boot plan.yaml --vm web01", "scmt boot plan.yaml --vm web01 --accel tcg --timeout 20m")),
    "status": CommandDoc((0, 1, 3, 41), ("scmt status", "scmt status plan.yaml --group erp --watch --interval 5s")),
    "events": CommandDoc((0, 41), ("scmt events --plan wave1 --since 2h",
                                   "scmt --json events --vm web01 --kind vm_state --limit 0")),
    "copy": CommandDoc((0, 1, 3, 5, 10, 11, 12, 14, 30, 31, 32, 33, 34, 35, 40, 41, 42, 143), (
        "scmt copy disk.img out.img --verify",
        "scmt copy nbd://esx01:10809/disk0 file:///var/lib/scmt/disk0.raw --bandwidth 200MiB/s")),
    "agent": CommandDoc((0,), ("scmt agent serve --disk disk0=/dev/sda",
                               "scmt agent restore plan.yaml --vm db01 --generation 3 --out /restore")),
    "agent serve": CommandDoc((0, 1, 3, 5, 10), (
        "scmt agent serve --disk disk0=/dev/sda --listen 0.0.0.0:10809",)),
    "agent restore": CommandDoc((0, 1, 3, 10, 31, 41, 42), (
        "scmt agent restore plan.yaml --vm db01",
        "scmt agent restore plan.yaml --vm db01 --generation 3 --out /restore")),
    "demo": CommandDoc((0, 1, 5, 13, 30, 31, 50, 52, 53, 60, 143), ("scmt demo", "scmt demo --keep /tmp/scmt-lab")),
    "version": CommandDoc((0,), ("scmt version", "scmt --json version")),
    "help": CommandDoc((0,), ("scmt help exit-codes", "scmt help json")),
    "schema": CommandDoc((0,), ("scmt schema assess", "scmt schema plan validate > plan-validate.schema.json")),
}

#: What each command says when a signal stops it: (what was kept, the one instruction; ``{line}`` is the
#: command line as given).  Every interruption prints this hint and no other instruction.
_KEPT = "progress so far was checkpointed"
INTERRUPTED: dict[str, tuple[str, str]] = {
    "copy": (_KEPT, "continue it from its last checkpoint with: {line} --resume "
                    "(without --resume it starts over)"),
    "sync": (_KEPT, "run the same command again; each VM continues from its last checkpoint: {line}"),
    "failover": ("the cutover steps done were recorded",
                 "run the same command again; each VM continues at its first step not done "
                 "(or roll it back with 'scmt rollback'): {line}"),
    "migrate": ("each VM's progress was recorded",
                "run the same command again; each VM continues where it stopped: {line}"),
    "rollback": ("the rollback steps done were recorded", "run the same command again to finish it: {line}"),
    "finalize": ("VMs finalized so far are committed", "run the same command again for the others: {line}"),
    "boot": ("QEMU was stopped (a dir target); a libvirt domain keeps running (virsh console, virsh destroy)",
             "run the same command again to boot again (a running libvirt domain is watched, not restarted): "
             "{line}"),
    "agent restore": ("the restore was not finished", "run the same command again (it restores from the start): "
                                                       "{line}"),
    "demo": ("the demo does not continue where it stopped (its fake vCenter lived in this process)",
             "run the same command again: it starts over{keep}: {line}"),
}


def interrupted_error(signal_name: str, command: str, argv: list[str]) -> Any:
    """The error of a command stopped by SIGINT (``"SIGINT"``) or SIGTERM: one line, and one hint that
    says how to go on (:data:`INTERRUPTED`; a command without an entry changed nothing worth keeping)."""
    import shlex

    from scmt_cli.errors import Interrupted, Terminated

    what, how = INTERRUPTED.get(command, ("", "run the same command again: {line}"))
    words = list(argv)
    if command == "copy" and "--resume" in words:
        how = "continue it with the same command: {line}"
    line = "scmt " + shlex.join(words)
    keep = ""
    if command == "demo" and "--keep" in words:
        keep = f" in {words[words.index('--keep') + 1]}" if words.index("--keep") + 1 < len(words) else ""
    hint = how.format(line=line, keep=keep)
    if signal_name == "SIGINT":
        return Interrupted("interrupted (Ctrl-C)" + (f"; {what}" if what else ""), hint=hint)
    return Terminated("terminated (SIGTERM)" + (f"; {what}" if what else ""), hint=hint)


# Fixed-choice option values: completed by the shell, listed in tests against the domain's values.
CHOICES: dict[str, tuple[str, ...]] = {
    "--method": ("managed", "agentless", "agent", "hot-backup"),
    "--source-action": ("shutdown", "disconnect-network", "none"),
    "--target-state": ("on", "off"),
    "--format": ("table", "csv"),
    "--target": ("dir", "libvirt"),
}


def exit_code_lines(codes: tuple[int, ...]) -> list[tuple[str, str]]:
    every = sorted(set(codes) | set(COMMON_CODES))
    return [(str(c), EXIT_CODES[c]) for c in every if c in EXIT_CODES]


def walk(command: Any, path: str = "scmt") -> Iterator[tuple[str, Any]]:
    """(``"plan validate"``, command) for the root and every (sub)command."""
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from walk(sub, name if path == "scmt" else f"{path} {name}")


def _format_epilog(self: Any, ctx: Any, formatter: Any) -> None:
    doc: CommandDoc | None = getattr(self, "_scmt_doc", None)
    root = getattr(self, "_scmt_root", False)
    with formatter.section("Global options (before or after the command)"):
        formatter.write_dl(list(GLOBAL_OPTIONS))
    if root:
        with formatter.section("Exit codes (the same meaning for every command)"):
            formatter.write_dl([(str(c), m) for c, m in EXIT_CODES.items()])
    else:
        with formatter.section("Exit codes"):
            formatter.write_dl(exit_code_lines(doc.codes if doc else ()))
            formatter.write_text("All codes: 'scmt help exit-codes'.")
    if doc and doc.examples:
        with formatter.section("Examples"):
            for line in doc.examples:  # never wrapped: an example is copied as it is
                formatter.write(f"{'':>{formatter.current_indent}}$ {line}\n")


def _argument_name(param: Any) -> str:
    name = str(param.metavar or param.name.upper())
    if param.nargs != 1:
        name += "..."
    return name


def _usage_pieces(self: Any, ctx: Any) -> list[str]:
    name = _argument_name(self)
    return [name if self.required else f"[{name}]"]


def _argument_help(self: Any, ctx: Any) -> tuple[str, str] | None:
    if self.hidden:
        return None
    return _argument_name(self), self.help or ""


def _complete_choices(choices: tuple[str, ...]) -> Callable[..., list[str]]:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def plan_vm_names(plan: Any) -> list[str]:
    """VM names of the plan file(s) given on the line (no validation: completion must not fail)."""
    import yaml

    files = plan if isinstance(plan, (list, tuple)) else [plan]
    names: list[str] = []
    for f in files:
        if f is None:
            continue
        try:
            data = yaml.safe_load(Path(f).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001, S112 - completion must never print a traceback
            continue
        for vm in (data or {}).get("vms") or [] if isinstance(data, dict) else []:
            if isinstance(vm, dict) and isinstance(vm.get("name"), str):
                names.append(vm["name"])
    return names


def _complete_vm(ctx: Any, param: Any, incomplete: str) -> list[str]:
    import os

    plan = ctx.params.get("plan") or ctx.params.get("plans")
    if not plan:  # the line does not parse yet (an option without its value): find the plan's word
        line = os.environ.get("COMP_WORDS") or os.environ.get("_TYPER_COMPLETE_ARGS") or ""
        plan = [w for w in line.split() if w.endswith((".yaml", ".yml"))]
    return [n for n in plan_vm_names(plan) if n.startswith(incomplete)]


def _named(callback: Callable[..., Any], path: str) -> Callable[..., Any]:
    """``callback`` that first tells the Ui which command runs (its ``--json`` document's schema)."""
    import functools

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        from scmt_cli.cli.context import current

        current().command = path
        return callback(*args, **kwargs)

    return run


def decorate(root: Any) -> Any:
    """Apply the contract to ``root`` (the click group of the Typer app) and every subcommand; idempotent."""
    if getattr(root, "_scmt_decorated", False):
        return root
    for path, cmd in walk(root):
        cmd._scmt_doc = COMMANDS.get(path)
        cmd._scmt_root = path == "scmt"
        cmd.format_epilog = MethodType(_format_epilog, cmd)
        if getattr(cmd, "callback", None) is not None and not getattr(cmd, "commands", None):
            cmd.callback = _named(cmd.callback, path)
        for param in getattr(cmd, "params", []):
            if param.param_type_name == "argument":
                param.get_usage_pieces = MethodType(_usage_pieces, param)
                param.get_help_record = MethodType(_argument_help, param)
                continue
            opts = set(getattr(param, "opts", ()))
            if "--vm" in opts:
                param._custom_shell_complete = _complete_vm
            for opt, choices in CHOICES.items():
                if opt in opts and getattr(param, "_custom_shell_complete", None) is None:
                    param._custom_shell_complete = _complete_choices(choices)
    root._scmt_decorated = True
    return root
