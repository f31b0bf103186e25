"""The ``converted`` cutover step: guest conversion as a supervised, visible, recoverable step.

* before the converter starts, the VM's step data records ``converting``
  (``started_at``, ``log``), so ``scmt status`` shows "converting, 4m10s"
  while it runs; the entry is replaced by ``conversion`` (the outcome) when
  it ends;
* each run gets its own log file and libguestfs cache under the state
  store's folder: ``<state dir>/v2v/<plan>/<vm>/<UTC time>.log`` and
  ``.../<UTC time>.cache/`` (removed after the run);
* the timeouts are the plan's ``target.v2v_timeout`` / ``v2v_stall_timeout``
  unless ``--v2v-timeout`` / ``--v2v-stall-timeout`` override them;
* a failed conversion (:class:`~scmt_cli.errors.ConversionError`, exit 52)
  leaves the synced disks unchanged (the converter wrote overlays only).
  What happens to the source is :func:`after_failure`'s business: by default
  failover rolls the source back at once (its network or power restored, the
  VM ``rolled-back``), because a production VM must not stay down while
  nobody looks; ``--keep-source-down`` leaves it quiesced for a quick retry.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from scmt_cli.errors import ConversionError, ScmtError
from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.targets.convert import ConvertJob


def work_dir(ctx: MigrationContext, vm: str) -> Path:
    """``<state dir>/v2v/<plan>/<vm>`` (the target's VM folder when the store has no local file)."""
    path = getattr(ctx.store, "path", None)
    if isinstance(path, Path) and path.name not in ("", ":memory:") and path.parent.is_dir():
        return path.parent / "v2v" / ctx.plan.name / vm
    root = getattr(ctx.platform, "root", None)
    from scmt_cli.targets.storage import vm_dir

    return vm_dir(Path(root), ctx.effective(vm).target_name) / "v2v" if root else Path.cwd() / "scmt-v2v" / vm


def conversion_job(ctx: MigrationContext, vm: str, *, timeout: float | None,
                   stall_timeout: float | None) -> ConvertJob:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = work_dir(ctx, vm)
    return ConvertJob(log_path=folder / f"{stamp}.log", cache_dir=folder / f"{stamp}.cache",
                      cancel=ctx.cancel.check, timeout=timeout, stall_timeout=stall_timeout)


def plan_arg(ctx: MigrationContext) -> str:
    return shlex.quote(str(ctx.plan.file))


def failure_hint(ctx: MigrationContext, vm: str, exc: ConversionError, *, restored: bool) -> str:
    log = exc.details.get("log") or "the converter's log"
    retry = f"scmt failover {plan_arg(ctx)} --vm {shlex.quote(vm)}"
    if restored:
        return (f"the source was restored and the synced disks are unchanged; read {log}, fix the cause, then "
                f"run 'scmt sync {plan_arg(ctx)} --vm {shlex.quote(vm)}' and '{retry}' again "
                f"(or '{retry} --direct' to fail over without conversion)")
    return (f"the source is still quiesced and the synced disks are unchanged; run '{retry}' to retry the "
            f"conversion (read {log} first; '{retry} --direct' skips it), or 'scmt rollback {plan_arg(ctx)} --vm "
            f"{shlex.quote(vm)}' to bring the source back")


def after_failure(ctx: MigrationContext, cutovers: list[Any], exc: ConversionError, *, keep_source_down: bool,
                  group: str | None, members: list[str]) -> dict[str, str]:
    """Roll the source of every cutover in ``cutovers`` back unless ``keep_source_down``.

    Returns per VM the sentence to add to its error.  A rollback that fails
    itself is reported and leaves the VM failed (``scmt rollback`` finishes it).
    """
    from scmt_cli.services.migration.rollback import _rollback_vm

    notes: dict[str, str] = {}
    for c in cutovers:
        if keep_source_down:
            notes[c.vm] = failure_hint(ctx, c.vm, exc, restored=False)
            continue
        try:
            status, data = ctx.status(c.vm)
            out = _rollback_vm(ctx, c.vm, status, data, group, members)
            ctx.reporter.log("warning", f"{c.vm}: guest conversion failed: the source was rolled back in "
                                        f"{out.data.get('rollback_seconds')} s", vm=c.vm)
            notes[c.vm] = failure_hint(ctx, c.vm, exc, restored=True)
        except ScmtError as rb:
            notes[c.vm] = (f"restoring the source failed too ({rb.message}): run 'scmt rollback {plan_arg(ctx)} "
                           f"--vm {shlex.quote(c.vm)}' now")
    return notes
