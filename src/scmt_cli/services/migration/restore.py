"""``scmt agent restore``: rebuild a hot-backup VM's disks as they were after a sync generation.

Without ``generation`` it lists the restore points (every successful pass whose
state the kept journals can rebuild).  With one, it writes ``disk<N>.raw``
files into ``out`` (never touching the target disks), under the VM's lock so
no sync changes the target meanwhile.  See :mod:`.journal` for the format.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.errors import InvalidStateError, UsageError
from scmt_cli.events import Reporter
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.journal import journal_root, restorable, restore_point


@dataclass(frozen=True)
class RestoreRequest:
    plan: Path
    vm: str
    generation: int | None = None
    out: Path | None = None


@dataclass
class RestoreResult:
    vm: str
    points: list[dict[str, Any]] = field(default_factory=list)
    generation: int | None = None
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "restore_points": self.points, "generation": self.generation,
                "files": self.files, "warnings": list(self.warnings)}


def restore_service(req: RestoreRequest, store: Any, reporter: Reporter) -> RestoreResult:
    ctx = open_context(req.plan, store, reporter)
    try:
        ctx.select([req.vm])
        eff = ctx.effective(req.vm)
        if eff.method != "hot-backup":
            raise UsageError(f"{req.vm}: point-in-time restore needs method hot-backup (it is {eff.method})")
        root_dir = getattr(ctx.platform, "root", None)
        if root_dir is None:
            raise InvalidStateError(f"{req.vm}: this target platform keeps no journal")
        from scmt_cli.targets.storage import vm_dir

        folder = vm_dir(Path(root_dir), eff.target_name)
        root = journal_root(folder)
        gens = store.generations(ctx.plan.name, req.vm)
        passes = [g.id for g in gens]
        result = RestoreResult(req.vm)
        for g in gens:
            if g.status == "ok" and restorable(root, passes, g.id):
                when = dt.datetime.fromtimestamp(g.finished_at or g.started_at, dt.UTC)
                result.points.append({"generation": g.id, "kind": g.kind,
                                      "time": when.isoformat(timespec="seconds")})
        if req.generation is None:
            return result
        if req.out is None:
            raise UsageError("give --out DIR for the restored disk files")
        if not any(pt["generation"] == req.generation for pt in result.points):
            known = ", ".join(str(pt["generation"]) for pt in result.points) or "none"
            raise InvalidStateError(f"{req.vm}: generation {req.generation} is not a restore point "
                                    f"(restore points: {known})")
        disks = sorted(folder.glob("disk*.raw"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else 0)
        with ctx.lock(req.vm):
            files = restore_point(root, disks, req.generation, req.out, passes)
        result.generation = req.generation
        result.files = [str(f) for f in files]
        reporter.event("restored", vm=req.vm, generation=req.generation, files=result.files)
        return result
    finally:
        ctx.close()
