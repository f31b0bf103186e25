"""``scmt migrate``: the managed method, seed to boot in one unattended run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli._common import BandwidthOpt, DryRunOpt, V2vStallOpt, V2vTimeoutOpt, group_option
from scmt_cli.cli.context import current


def migrate(
    plan: Annotated[Path, typer.Argument(help="Migration plan (YAML).", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option("--vm", help="Only this VM (repeatable).", metavar="NAME")] = None,
    group: Annotated[Optional[str], group_option("Migrate")] = None,
    max_passes: Annotated[int, typer.Option("--max-passes", help="Sync passes before the cutover at most.", metavar="N",
                                            min=1, max=50)] = 5,
    bandwidth: BandwidthOpt = None,
    dry_run: DryRunOpt = False,
    v2v_timeout: V2vTimeoutOpt = None,
    v2v_stall_timeout: V2vStallOpt = None,
) -> None:
    """The managed method: seed, sync, shut the source down, final sync, boot the target (2 VMs at a time).

    Only VMs with method: managed; the others (they cut over when you say,
    with the plan's source action) are skipped with a warning, or refused
    (exit 2) when named with --vm or --group: use sync and failover for them.
    --group selects a group's members; each still cuts over on its own (a group that must fail
    over together uses another method and 'scmt failover --group').
    Rerun after an interruption: every VM continues where it stopped.
    """
    from scmt_cli.services.migration.migrate import MigrateRequest, migrate_service
    from scmt_cli.state import StateStore

    ui = current()
    req = MigrateRequest(plan=plan, vms=tuple(vm or ()), max_passes=max_passes, group=group, bandwidth=bandwidth,
                         v2v_timeout=v2v_timeout, v2v_stall_timeout=v2v_stall_timeout)
    if dry_run:
        from scmt_cli.cli.preview import render as render_preview
        from scmt_cli.services.migration.preview import preview_migrate

        ui.finish(preview_migrate(req, ui.opts.state, ui.reporter), render_preview, document="preview")
        return
    with StateStore.open(ui.opts.state) as store:
        result = migrate_service(req, store, ui.reporter)
    ui.finish(result, render)


def render(console: Console, result: Any) -> None:
    from scmt_cli.cli._migration_view import render_outcomes

    for o in result.outcomes:
        o.data.setdefault("sync_passes", len(o.data.get("passes", [])))
    render_outcomes(console, result, title=f"managed migration of plan {result.plan}",
                    columns=[("sync passes", "sync_passes"), ("downtime", "downtime_seconds")])
