"""The ``copy`` use case: a verified, resumable block copy between two URLs.

``run_copy`` tells one story: open both ends through the transport registry
(wrapped for retry with reconnect and an optional bandwidth limit), resume
the interrupted copy or start, choose a full or an incremental (``since``)
copy, run the block engine with checkpoints in the given store, write the
manifest, verify, and return a :class:`CopyResult`.  What a transport can do
beyond reading and writing (its identity, its own digests, its counters) is
asked through the transport interface, never looked up.  It never prints;
errors are ScmtError subclasses; SIGINT/SIGTERM propagate after a final
checkpoint.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.agent.incremental import digest_incremental_copy, wire_stats
from scmt_cli.blocks.api import full_copy, incremental_copy
from scmt_cli.blocks.checkpoint import Checkpointer, CheckpointStore, checkpoint_key
from scmt_cli.blocks.digest import Manifest
from scmt_cli.blocks.engine import CopyOptions, CopyOutcome, CopyStats, default_in_flight
from scmt_cli.blocks.plan import DEFAULT_CHUNK_SIZE, check_chunk_size
from scmt_cli.blocks.sourcecheck import check_identity, identity_json, sample_unless_live
from scmt_cli.blocks.verify import verify_copy
from scmt_cli.errors import InvalidStateError, UsageError
from scmt_cli.events import Reporter
from scmt_cli.services.datameter import DataMeter, DataProgress
from scmt_cli.transports import base as transports
from scmt_cli.transports.base import BlockSource, BlockTarget
from scmt_cli.transports.wrappers import RetryingSource, RetryingTarget, RetryPolicy, ThrottledSource, TokenBucket

MAX_IN_FLIGHT = 64
#: Said after an interrupted copy's final checkpoint: a fact; the one instruction is the Interrupted
#: error's hint (cli/contract.py).
KEPT = "the checkpoint is kept in the state store"


@dataclass(frozen=True)
class CopyRequest:
    """What ``scmt copy`` was asked to do.  ``bandwidth`` is bytes/s (None: unlimited)."""

    source: str
    target: str
    since: Path | None = None
    manifest_out: Path | None = None
    bandwidth: float | None = None
    verify: bool = False
    resume: bool = False
    chunk_size: int | None = None
    in_flight: int | None = None  # None: engine.default_in_flight(source)
    retries: int = 5
    checkpoint_seconds: float = 5.0


@dataclass
class CopyResult:
    source: str
    target: str
    mode: str
    stats: CopyStats
    resumed: bool = False
    verified: bool = False
    manifest_path: str | None = None
    elapsed_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "mode": self.mode,
            "resumed": self.resumed,
            "verified": self.verified,
            "manifest": self.manifest_path,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            # bytes read from the source per second of copying: data moved, never the holes skipped
            "throughput_bytes_per_s": (int(self.stats.bytes_read / self.stats.copy_seconds)
                                       if self.stats.copy_seconds > 0 else None),
            "stats": self.stats.to_dict(),
            "warnings": list(self.warnings),
        }


SourceWrapper = Callable[[BlockSource], BlockSource]
TargetWrapper = Callable[[BlockTarget], BlockTarget]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def run_copy(req: CopyRequest, reporter: Reporter, store: CheckpointStore | None, *,
             wrap_source: SourceWrapper | None = None, wrap_target: TargetWrapper | None = None) -> CopyResult:
    """Run one copy; see the module docstring.  ``wrap_*`` let tests inject faults under the retry layer."""
    t_start = time.monotonic()
    base, chunk_size, in_flight = _check_request(req)
    warnings: list[str] = []
    src: RetryingSource | None = None
    dst: RetryingTarget | None = None
    try:
        src, dst = _open_ends(req, reporter, chunk_size, wrap_source, wrap_target)
        read_side: BlockSource = src
        if req.bandwidth is not None and req.bandwidth != float("inf"):
            read_side = ThrottledSource(src, TokenBucket(req.bandwidth, burst=max(req.bandwidth / 4, chunk_size)))
        meter = DataMeter(read_side)  # the progress bar counts data read, not holes (services/datameter.py)
        base = _choose_mode(req, base, dst, warnings)
        mode = "incremental" if base is not None else "full"
        ckpt, resumed = _resume_or_start(req, store, src, dst, base, chunk_size, mode, reporter, warnings)
        reporter.event("copy_started", source=src.describe(), target=dst.describe(), size=src.size, mode=mode,
                       chunk_size=chunk_size, resume=resumed)
        opts = CopyOptions(chunk_size=chunk_size, in_flight=in_flight, task=_task_name(req.target),
                           checkpoint_seconds=req.checkpoint_seconds, resume_hint=KEPT)
        outcome = _run_engine(meter, dst, base, opts, ckpt, req.resume, DataProgress(reporter, meter, opts.task))
        stats = outcome.stats
        stats.extra["retries"] = src.retrier.retries + dst.retrier.retries
        stats.extra.update(wire_stats(src))
        if req.manifest_out is not None:
            outcome.manifest.target = dst.describe()
            outcome.manifest.save(req.manifest_out)
        if req.verify:
            t0 = time.monotonic()
            # it re-reads the source's data: under --bandwidth like the copy (the datastore is the same)
            stats.verified_chunks = verify_copy(read_side, dst, chunk_size, in_flight=in_flight, reporter=reporter,
                                                task=f"verify {_task_name(req.target)}")
            stats.verify_seconds = time.monotonic() - t0
        reporter.event("copy_done", target=dst.describe(), bytes_read=stats.bytes_read,
                       bytes_written=stats.bytes_written, verified=req.verify)
        return CopyResult(source=src.describe(), target=dst.describe(), mode=mode, stats=stats, resumed=resumed,
                          verified=req.verify, manifest_path=str(req.manifest_out) if req.manifest_out else None,
                          elapsed_seconds=time.monotonic() - t_start, warnings=warnings)
    finally:
        for end in (dst, src):
            if end is not None:
                try:
                    end.close()
                except Exception:  # noqa: BLE001,S110 - closing must not mask the real outcome
                    pass


def _check_request(req: CopyRequest) -> tuple[Manifest | None, int, int]:
    """Refuse bad options before anything is opened; return the base manifest, the chunk size, the in-flight."""
    in_flight = req.in_flight if req.in_flight is not None else default_in_flight(req.source)
    if not 1 <= in_flight <= MAX_IN_FLIGHT:
        raise UsageError(f"--in-flight {in_flight}: expected 1 to {MAX_IN_FLIGHT}")
    if req.bandwidth is not None and req.bandwidth <= 0:
        raise UsageError("--bandwidth must be positive")
    base = Manifest.load(req.since) if req.since is not None else None
    chunk_size = req.chunk_size or (base.chunk_size if base else DEFAULT_CHUNK_SIZE)
    check_chunk_size(chunk_size)
    if base is not None and chunk_size != base.chunk_size:
        raise UsageError(f"--chunk-size {chunk_size} differs from the manifest's chunk size {base.chunk_size}",
                         hint="omit --chunk-size with --since")
    return base, chunk_size, in_flight


def _open_ends(req: CopyRequest, reporter: Reporter, chunk_size: int, wrap_source: SourceWrapper | None,
               wrap_target: TargetWrapper | None) -> tuple[RetryingSource, RetryingTarget]:
    """Open the source, then a target of its size, each under a retry layer that reopens it."""
    policy = RetryPolicy(attempts=max(1, req.retries))

    def open_src() -> BlockSource:
        s = transports.open_source(req.source)
        return wrap_source(s) if wrap_source else s

    src = RetryingSource(open_src(), policy, reopen=open_src, reporter=reporter)
    try:
        size = src.size

        def open_dst() -> BlockTarget:
            t = transports.open_target(req.target, size=size)  # every factory takes size= (transports.base)
            return wrap_target(t) if wrap_target else t

        dst = RetryingTarget(open_dst(), policy, reopen=open_dst, reporter=reporter)
    except BaseException:
        src.close()
        raise
    if dst.describe() == src.describe():
        dst.close()
        src.close()
        raise UsageError(f"source and target are the same disk: {src.describe()}")
    return src, dst


def _choose_mode(req: CopyRequest, base: Manifest | None, dst: BlockTarget, warnings: list[str]) -> Manifest | None:
    """The base manifest of an incremental copy, or None for a full one."""
    if base is not None and dst.fresh:
        warnings.append(f"{dst.describe()} did not exist: made a full copy instead of an incremental one")
        return None
    if base is not None and base.target != dst.describe():
        # Chunks equal to the manifest are not written: it must describe what THIS target holds.
        raise InvalidStateError(
            f"{req.since}: the manifest describes target {base.target}, not {dst.describe()}",
            hint="pass the manifest written by the last copy to this target, or copy without --since")
    return base


def _resume_or_start(req: CopyRequest, store: CheckpointStore | None, src: BlockSource, dst: BlockTarget,
                     base: Manifest | None, chunk_size: int, mode: str, reporter: Reporter,
                     warnings: list[str]) -> tuple[Checkpointer | None, bool]:
    """The checkpointer of this copy (None without a store) and whether an interrupted copy is resumed.

    The checkpoint is bound to both ends: a target that was replaced (or is new) holds none of the
    checkpointed chunks, so the copy restarts with a warning; a source that is not the disk the
    interrupted copy read (another identity, or a re-read sample that differs) is refused with
    SourceChangedError (exit 34): resuming would leave a target made of two disks.
    """
    if store is None:
        if req.resume:
            raise UsageError("--resume needs a state store to read the checkpoint from")
        return None, False
    key = checkpoint_key(src.describe(), dst.describe())
    target_id = dst.identity()
    params: dict[str, Any] = {"source": src.describe(), "target": dst.describe(), "size": src.size,
                              "chunk_size": chunk_size, "mode": mode,
                              "base": _file_digest(req.since) if base is not None and req.since else None,
                              "source_id": identity_json(src),
                              "target_id": target_id.to_json() if target_id is not None else None}
    ckpt = Checkpointer(store, key, params)
    existing = store.get_checkpoint(key)
    old = (existing or {}).get("params", {})
    if existing is not None and req.resume and dst.fresh:
        # The target was just created: whatever the checkpoint says was written is gone.
        warnings.append(f"{dst.describe()} did not exist any more: the interrupted copy was restarted "
                        "from the beginning")
        ckpt.clear()
        existing = None
    elif existing is not None and req.resume and old.get("target_id") != params["target_id"]:
        # Another file now sits at the target's path: it holds none of the checkpointed chunks.
        warnings.append(f"{dst.describe()} was replaced by another file since the interrupted copy: "
                        "the copy was restarted from the beginning")
        ckpt.clear()
        existing = None
    elif existing is not None and req.resume:
        current = check_identity(src, old.get("source_id"))  # exit 34 before "other parameters" (42)
        loaded = ckpt.load()  # the other parameters (42 when they differ)
        if loaded is not None:
            sample_unless_live(src, current, loaded[0], loaded[1], chunk_size)
    elif existing is not None and old == params:  # it could have been continued: the user may have meant to
        reporter.log("warning", "an interrupted copy to this target was found; starting over "
                     "(pass --resume to continue it instead)")
    elif existing is not None:  # another source or other parameters: starting over is the only way
        reporter.log("info", "an interrupted copy to this target, of another source or with other parameters, "
                     "is discarded; starting over")
    elif req.resume:
        reporter.log("info", "no interrupted copy to resume; starting from the beginning")
    return ckpt, existing is not None and req.resume


def _run_engine(src: BlockSource, dst: BlockTarget, base: Manifest | None, opts: CopyOptions,
                ckpt: Checkpointer | None, resume: bool, reporter: Reporter) -> CopyOutcome:
    """A full copy, or an incremental one: by the source's own digests when it has them (the scmt agent:
    only changed chunks cross the wire), else by reading and comparing with the base manifest."""
    if base is None:
        return full_copy(src, dst, options=opts, checkpointer=ckpt, resume=resume, reporter=reporter)
    remote = src.remote_digests(base.chunk_size)
    if remote is not None:
        return digest_incremental_copy(src, dst, base, options=opts, checkpointer=ckpt, resume=resume,
                                       reporter=reporter, remote=remote)
    return incremental_copy(src, dst, base, options=opts, checkpointer=ckpt, resume=resume, reporter=reporter)


def _task_name(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return tail or "copy"
