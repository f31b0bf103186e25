"""``scmt plan``: create, validate, show and estimate migration plans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli import estimate
from scmt_cli.cli.context import current, line

app = typer.Typer(help="Create, validate, show and estimate migration plans.", no_args_is_help=True)

InventoryOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--inventory", "-i",
        help="Inventory to check sizes (only-expand) and mappings against; default: the plan's source.inventory.",
        metavar="FILE",
    ),
]


@app.command("init")
def init(
    out: Annotated[Path, typer.Argument(help="Where to write the new plan.", metavar="FILE")],
    method: Annotated[str, typer.Option("--method", help="managed | agentless | agent | hot-backup.",
                                                       metavar="METHOD")] = "agentless",
    target: Annotated[str, typer.Option(
        "--target", help="dir: disk files and a domain XML in a folder (works anywhere; the default) | "
                         "libvirt: domains on a libvirt host (qemu:///system).", metavar="TYPE")] = "dir",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter plan that validates as written."""
    from scmt_cli.services.plan import init_plan

    ui = current()
    ui.finish(init_plan(out, method=method, target=target, force=force, reporter=ui.reporter), _render_init)


@app.command("validate")
def validate(
    plans: Annotated[list[Path], typer.Argument(help="Plan files.", metavar="PLAN")],
    inventory: InventoryOpt = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="With an inventory: a VM that assessment blocks for its method fails validation "
                         "(exit 20) instead of being a warning.")] = False,
) -> None:
    """Check plans against the schema and the semantic rules.

    With an inventory (--inventory or the plan's source.inventory) every VM is also assessed under
    its method, as sync will: a blocked VM is a warning naming the rule ids (exit 1), or with
    --strict an error (exit 20).  Exit 0: all valid; 1: valid with warnings; 2: at least one plan
    is invalid (every problem of every file is listed, one line each).
    """
    from scmt_cli.services.plan import validate_plans

    ui = current()
    ui.finish(validate_plans(plans, inventory_path=inventory, reporter=ui.reporter, strict=strict),
              _render_validate)


@app.command("show")
def show(
    plan: Annotated[Path, typer.Argument(help="Plan file.", metavar="PLAN")],
    inventory: InventoryOpt = None,
) -> None:
    """Show a plan with every default resolved (--json: the resolved model)."""
    from scmt_cli.services.plan import show_plan

    ui = current()
    ui.finish(show_plan(plan, inventory_path=inventory, reporter=ui.reporter), _render_show)


@app.command("schema")
def schema() -> None:
    """Print the plan JSON Schema (draft 2020-12)."""
    from scmt_cli.services.plan import plan_schema

    current().finish(plan_schema(), _render_schema)


# `plan estimate` lives in its own module (owned by the assessment work).
app.command("estimate")(estimate.estimate)


def _plain(console: Console, text: str, style: str | None = None) -> None:
    line(console, text, style)


def _render_init(console: Console, result: Any) -> None:
    verb = "replaced" if result.overwritten else "wrote"
    _plain(console, f"{verb} {result.file} (method {result.method}, target {result.target}); edit it, then: "
                    f"scmt plan validate {result.file}")


def _render_validate(console: Console, report: Any) -> None:
    notes: list[str] = []
    for verdict in report.files:
        s = verdict.summary
        groups = f", {s['groups']} group{'s' if s['groups'] != 1 else ''}" if s.get("groups") else ""
        status = "valid with warnings" if verdict.warnings else "valid"
        _plain(console, f"{verdict.file}: {status} ({s['vms']} VM{'s' if s['vms'] != 1 else ''}{groups}; "
                        f"method {', '.join(s['methods'])})")
        notes += [n for n in verdict.notes if n not in notes]
    for note in notes:
        _plain(console, f"note: {note}", "dim")


def _render_schema(console: Console, result: Any) -> None:
    import json

    console.file.write(json.dumps(result.schema, indent=2) + "\n")


def _render_show(console: Console, view: Any) -> None:
    from rich.table import Table

    from scmt_cli.cli.plan_view import describe_defaults, describe_source, describe_target, vm_lines

    plan = view.loaded.plan
    _plain(console, f"plan {plan.name}  ({view.file}, format version {plan.version})", "bold")
    if plan.description:
        _plain(console, f"  {plan.description}")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("source", describe_source(plan.source))
    head.add_row("target", describe_target(plan.target))
    head.add_row("defaults", describe_defaults(plan.defaults))
    console.print(head)
    if plan.groups:
        groups = Table(title="groups (fail over together)", title_justify="left")
        for col in ("group", "VMs", "source action", "target state"):
            groups.add_column(col)
        for g in plan.groups:
            groups.add_row(g.name, ", ".join(g.vms), g.source_action or "(default)", g.target_state or "(default)")
        console.print(groups)
    _plain(console, "VMs (* = set on the VM or its group)", "bold")
    for vm in plan.vms:
        eff = plan.effective(vm)
        title = eff.name if eff.target_name == eff.name else f"{eff.name} -> {eff.target_name}"
        _plain(console, f"  {title}" + (f"  [group {eff.group}]" if eff.group else ""), "bold")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", min_width=14)
        grid.add_column()
        for label, text in vm_lines(eff):
            grid.add_row(f"    {label}", text)
        console.print(grid)
    if view.inventory_source:
        _plain(console, f"sizes checked against {view.inventory_source}", "dim")
    for note in view.loaded.notes:
        _plain(console, f"note: {note}", "dim")
