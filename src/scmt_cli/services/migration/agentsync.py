"""One sync pass of a ``method: agent`` VM: disks read through the scmt agent, no snapshots, no CBT.

The agent (``scmt agent serve`` inside the source OS) serves the VM's disks
read-only; the plan's ``agent:`` block says where (``address``) and with which
token (``token_env``/``token_file``).  Every disk the agent lists is copied,
in the agent's order (target disk 0, 1, ...), except those a plan ``disks``
entry whose ``label`` is the agent's disk name marks ``include: false``.

Per disk, checkpoint ``agent/<plan>/<vm>/<disk>`` keeps the invariant "the
target equals ``manifest``, except the chunks listed in ``attempt``":

* seed (no manifest yet, a target that was recreated, or a disk that now
  maps to another target file): every allocated chunk is copied, resumably
  (engine checkpoint ``.../seed``);
* incremental / final, *tracked*: the agent's kernel change tracking
  (:mod:`scmt_cli.agent.tracking`) lists the chunks written since the cursor
  kept in the checkpoint (``track``); only those are read.  Every pass takes a
  new cursor *before* it reads, so a write during the pass is in the next one;
* incremental / final, *scan* (the disk is not tracked, or the agent says
  events may have been lost: it restarted, its trace buffer overflowed, the
  disk was resized): the agent hashes its chunks locally
  (:meth:`~scmt_cli.agent.transport.AgentDisk.remote_digests`); only chunks
  whose digest differs from the manifest cross the wire.  A warning in the
  VM's outcome says why, and the disk's result has ``tracking: "scan"`` and
  ``tracking_reason``.

The chunks about to be copied are recorded in ``attempt`` (with the new cursor)
first, so a pass killed half way marks them unknown and the next pass copies
them again.  A seed that was resumed keeps no cursor (chunks copied before the
interruption may have changed untracked): the pass after it scans.

The disk is live (no snapshot), so a pass is crash-consistent only after the
source is quiesced: failover's final pass asks the agent to flush and freeze
the file systems on the served disks (:data:`FREEZE_LIMIT` seconds at most;
the agent thaws by itself at that deadline), reads the last delta and thaws.
A file system the agent cannot freeze (the root file system, a failed
``FIFREEZE``) is a warning with the seed's advice (:data:`FREEZE_ADVICE`).

A pass reports what the agent used meanwhile (``agent``: CPU seconds, bytes
read, pauses per limit, peak RSS; :meth:`~scmt_cli.agent.transport.AgentDisk.agent_usage`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scmt_cli.agent import protocol as p
from scmt_cli.agent.client import AgentConnection, ClientTLS
from scmt_cli.agent.incremental import changed_extents, with_ratio
from scmt_cli.agent.transport import AgentDisk, load_token
from scmt_cli.blocks.api import changed_copy, plan_source
from scmt_cli.blocks.checkpoint import Checkpointer
from scmt_cli.blocks.digest import Manifest
from scmt_cli.blocks.engine import CopyOptions, CopyOutcome, copy_chunks
from scmt_cli.domain.plan import Effective
from scmt_cli.errors import ConfigError, InvalidStateError, PlanError, ScmtError
from scmt_cli.events import Reporter
from scmt_cli.services.migration.agentwatch import pushed_changes
from scmt_cli.services.migration.context import MigrationContext, VmOutcome
from scmt_cli.services.migration.diskcopy import KEPT, stable_indexes
from scmt_cli.services.migration.journal import UndoLog, journal_root, prune
from scmt_cli.state.locks import VmLock
from scmt_cli.targets import DiskRequest
from scmt_cli.targets.disklock import lock_target_url
from scmt_cli.transports import base as transports
from scmt_cli.transports.base import BlockSource, Extent
from scmt_cli.transports.wrappers import GuardedTarget

#: Chunk grid of agent syncs (the digests compared are per chunk: 1 MiB keeps deltas tight).
AGENT_CHUNK_SIZE = 1024 * 1024
#: Hard limit of the final pass's freeze (seconds); the agent thaws by itself then.
FREEZE_LIMIT = 120.0
#: The seed's advice where a file system cannot be frozen for the final pass.
FREEZE_ADVICE = ("stop the services that write to it before the final pass (the plan's failover pre hooks, "
                 "or source_action: shutdown)")


def disk_key(plan: str, vm: str, disk: str) -> str:
    return f"agent/{plan}/{vm}/{disk}"


def agent_token(eff: Effective) -> bytes:
    """The token of the VM's agent from the plan's reference (never logged)."""
    spec = eff.agent
    if spec is None:
        raise PlanError(f"{eff.name}: method {eff.method} needs an agent block (address, token_env or token_file)")
    return load_token(token_file=spec.token_file, token_env=spec.token_env, where=f"{eff.name}: agent {spec.address}")


def agent_tls(eff: Effective, reporter: Reporter | None = None) -> ClientTLS | None:
    """How the plan verifies the agent's TLS certificate (None: ``plaintext: true``, loudly).

    TLS is the default: without ``agent.fingerprint`` or ``agent.ca_file`` (or an explicit
    ``agent.plaintext``) there is nothing to verify the agent against, so this is a ConfigError.
    """
    spec = eff.agent
    assert spec is not None
    if spec.plaintext:
        if reporter is not None:
            reporter.log("warning", f"{eff.name}: agent {spec.address}: PLAINTEXT (agent.plaintext: true): disk "
                         "data crosses the network unencrypted", vm=eff.name)
        return None
    if not spec.fingerprint and not spec.ca_file:
        raise ConfigError(f"{eff.name}: agent {spec.address}: the agent serves TLS and the plan does not pin its "
                          "certificate", hint="set agent.fingerprint to the SHA-256 that `scmt agent serve` logged "
                          "at its first start (or agent.ca_file)")
    return ClientTLS(fingerprint=spec.fingerprint, ca_file=str(spec.ca_file) if spec.ca_file else None)


def open_agent_disks(eff: Effective, token: bytes, reporter: Reporter | None = None) -> list[AgentDisk]:
    """One connection per served disk the plan includes, in the agent's order."""
    spec = eff.agent
    assert spec is not None
    tls = agent_tls(eff, reporter)
    conn = AgentConnection(spec.host, spec.port, token, where=f"agent://{spec.address}", tls=tls)
    try:
        listing = conn.json(p.T_LIST, {})
    finally:
        conn.close()
    names = [str(d.get("name")) for d in listing.get("disks", [])]
    skipped = {d.label for d in eff.disks if d.label is not None and not d.include}
    out: list[AgentDisk] = []
    try:
        for name in names:
            if name not in skipped:
                out.append(AgentDisk(spec.host, spec.port, name, token, where=f"agent://{spec.address}/{name}",
                                     compress=eff.compression != "none", tls=tls))
    except BaseException:
        for d in out:
            d.close()
        raise
    return out


def _copy_one(ctx: MigrationContext, vm: str, lock: VmLock, disk: AgentDisk, index: int, target_url: str,
              fresh: bool, wrap: Callable[[BlockSource], BlockSource], undo: UndoLog | None,
              watch: Callable[[str, bool], set[int] | None] | None, warnings: list[str]) -> dict[str, Any]:
    store, plan = ctx.store, ctx.plan.name
    key = disk_key(plan, vm, disk.disk)
    prog = store.get_checkpoint(key) or {}
    cs = AGENT_CHUNK_SIZE
    base: Manifest | None = None
    recorded = prog.get("target")
    if prog.get("manifest") and not fresh and recorded is not None and recorded != target_url:
        # The manifest describes another file (a disk before this one is no longer copied: indexes shifted).
        ctx.reporter.log("warning", f"{vm}: {disk.disk} now maps to target {target_url} (it was copied to "
                         f"{recorded}); copying the whole disk again", vm=vm)
    elif prog.get("manifest") and not fresh:
        base = Manifest.from_dict(prog["manifest"], where=key)
        if base.size != disk.size or base.chunk_size != cs:
            ctx.reporter.log("warning", f"{vm}: {disk.disk} changed size; copying the whole disk again", vm=vm)
            base = None
        else:
            for i in prog.get("attempt") or []:
                base.chunks[int(i)] = None  # copied by a pass that did not finish: unknown
    track = disk.tracked_changes(cs, prog.get("track") if base is not None else None)
    tracking: dict[str, Any] = {"tracking": "kernel" if track.changed is not None else "scan"}
    if base is not None and track.changed is None:
        tracking["tracking_reason"] = track.reason
        text = (f"{vm}: {disk.disk}: no reliable kernel change tracking ({track.reason}); the agent reads and "
                "hashes the whole disk to find the changes")
        warnings.append(text)
        ctx.reporter.log("warning", text, vm=vm)
        ctx.reporter.event("agent_tracking_fallback", vm=vm, disk=disk.disk, reason=track.reason)
    # The hot-backup WATCH stream re-hashes the whole disk on the agent: only for disks it cannot track.
    pushed = watch(disk.disk, base is not None) if watch is not None and track.cursor is None else None
    src = wrap(disk)
    disk_lock = lock_target_url(target_url, what=f"scmt sync of {vm} (agent)")
    try:
        dst = GuardedTarget(transports.open_target(target_url), lock.fence)  # no write once the lease may be gone
    except BaseException:
        if disk_lock is not None:
            disk_lock.release()
        raise
    t0 = time.monotonic()
    journaled = 0
    opts = CopyOptions(chunk_size=cs, in_flight=4, checkpoint_seconds=1.0, checkpoint_bytes=64 * cs,
                       task=f"{vm}/{disk.disk}", resume_hint=KEPT)
    try:
        outcome: CopyOutcome
        if base is None:
            mode = "seed"
            if undo is not None:
                undo.mark_unrestorable(index)
            params = {"vm": vm, "disk": disk.disk, "size": disk.size, "chunk_size": cs, "target": target_url,
                      "source_id": disk.identity().to_json()}
            ckpt = Checkpointer(store, key + "/seed", params)
            saved = store.get_checkpoint(key + "/seed")
            # A seed interrupted before the disk was resized, the target moved or the agent began serving
            # another device under this name cannot be resumed: start it over (a sync pass never fails on it).
            resume = saved is not None and not fresh and saved.get("params") == params
            if saved is not None and not fresh and not resume:
                ctx.reporter.log("warning", f"{vm}: {disk.disk}: the interrupted seed was made for another "
                                 "size or target; starting it over", vm=vm)
            if not resume:
                ckpt.clear()
            else:
                track = type(track)(None, None, "resumed seed")  # untracked changes before the resume
            outcome = copy_chunks(src, dst, plan_source(src, cs), options=opts, fresh=fresh, checkpointer=ckpt,
                                  resume=resume, reporter=ctx.reporter)
        else:
            if track.changed is not None or pushed is not None:  # tracked, or pushed by the agent's watcher
                mode = "tracked" if track.changed is not None else "pushed"
                todo = set(track.changed or pushed or ())
                todo |= {i for i, d in enumerate(base.chunks) if d is None}
                changed = [Extent(i * cs, min(cs, disk.size - i * cs)) for i in sorted(todo) if i * cs < disk.size]
            else:
                mode = "incremental"
                changed = changed_extents(disk.remote_digests(cs), base)
            store.put_checkpoint(key, {"manifest": base.to_dict(), "attempt": [e.offset // cs for e in changed],
                                       "target": target_url, "track": track.cursor})
            if undo is not None:  # hot backup: keep the bytes about to be overwritten
                journaled = undo.save_old(index, dst, [(e.offset, e.length) for e in changed])
            outcome = changed_copy(src, dst, changed, base=base, options=opts, reporter=ctx.reporter)
        lock.check()
        dst.flush()
    finally:
        dst.close()
        if disk_lock is not None:
            disk_lock.release()
    outcome.manifest.target = target_url
    store.put_checkpoint(key, {"manifest": outcome.manifest.to_dict(), "attempt": None, "target": target_url,
                               "track": track.cursor})
    store.upsert_disk(plan, vm, index, label=disk.disk, capacity_bytes=disk.size, target=target_url)
    s = outcome.stats
    extra = {"bytes_journaled": journaled} if undo is not None else {}
    return {"key": index, "label": disk.disk, "index": index, "mode": mode, "size": disk.size,
            "planned_bytes": s.chunks_planned * cs, "bytes_read": s.bytes_read, "bytes_written": s.bytes_written,
            "bytes_zero": s.bytes_zeroed, "seconds": round(time.monotonic() - t0, 3), "target": target_url,
            **tracking, **_wire(disk), **extra}


def _wire(disk: AgentDisk) -> dict[str, Any]:
    """The disk's transport counters (the agent's own figures are the VM's, see :func:`agent_pass`)."""
    return with_ratio(dict(disk.wire_stats()))


def _freeze(ctx: MigrationContext, vm: str, disk: AgentDisk, warnings: list[str]) -> dict[str, Any] | None:
    """Ask the agent to flush and freeze the file systems on its disks; None when it cannot.

    Every file system left unfrozen is a warning with the seed's advice (:data:`FREEZE_ADVICE`).
    """
    try:
        out = disk.freeze(FREEZE_LIMIT)
    except ScmtError as exc:
        text = (f"{vm}: the agent cannot freeze its file systems ({exc.message}); the final pass reads the disks "
                f"as they are: {FREEZE_ADVICE}")
        warnings.append(text)
        ctx.reporter.log("warning", text, vm=vm)
        return None
    frozen, refused = list(out.get("frozen", [])), list(out.get("refused", []))
    if frozen:
        ctx.reporter.log("info", f"{vm}: froze {', '.join(frozen)} on the source for the final pass", vm=vm)
    for r in refused:
        text = f"{vm}: cannot freeze {r.get('mount')} on the source ({r.get('reason')}): {FREEZE_ADVICE}"
        warnings.append(text)
        ctx.reporter.log("warning", text, vm=vm)
    return {"frozen": frozen, "refused": refused, "limit_s": FREEZE_LIMIT}


def _thaw(ctx: MigrationContext, vm: str, disk: AgentDisk) -> None:
    try:
        disk.thaw()
    except ScmtError as exc:  # the agent's watchdog thaws at the deadline anyway
        ctx.reporter.log("warning", f"{vm}: thawing the source's file systems failed ({exc.message}); the agent "
                         f"thaws them by itself within {FREEZE_LIMIT:.0f} s", vm=vm)


def _journal_root(ctx: MigrationContext, target_name: str) -> Path | None:
    """Where a hot-backup VM's undo journals live (next to its target disks), None without a known layout."""
    root = getattr(ctx.platform, "root", None)
    if root is None:
        ctx.reporter.log("warning", f"{target_name}: this target platform has no folder for the hot-backup "
                         "journal; point-in-time restore is off")
        return None
    from scmt_cli.targets.storage import vm_dir

    return journal_root(vm_dir(Path(root), target_name))


def agent_pass(ctx: MigrationContext, vm: str, lock: VmLock, *, kind: str, final: bool, out: VmOutcome,
               wrap: Callable[[BlockSource], BlockSource], copy_file_exists: Callable[[str, int], bool],
               hooks: Callable[[str], list[str]]) -> dict[str, Any]:
    """Copy every included disk of ``vm`` through its agent; return the pass statistics.

    ``hooks(stage)`` runs the sync hooks of ``stage`` (``pre``/``post``) and
    returns their warnings; the caller moves the VM's state.
    """
    store, plan = ctx.store, ctx.plan.name
    eff = ctx.effective(vm)
    token = agent_token(eff)
    t0 = time.monotonic()
    disks = open_agent_disks(eff, token, ctx.reporter)
    gen: int | None = None
    try:
        if not disks:
            raise InvalidStateError(f"{vm}: the agent serves no disk this plan copies")
        target_name = eff.target_name
        # Stable target indexes: a disk the agent no longer serves (or the plan excludes) moves no other disk.
        indexes = stable_indexes(store, plan, vm, [d.disk for d in disks], space="agent")
        fresh = {i: not copy_file_exists(target_name, i) for i in indexes}
        prepared = ctx.platform.prepare_disks(target_name, [DiskRequest(i, d.size) for i, d in zip(indexes, disks,
                                                                                                   strict=True)])
        by_index = {pd.index: pd for pd in prepared}
        running = store.last_generation(plan, vm)
        if running is not None and running.status == "running":
            store.finish_generation(running.id, ok=False, stats={}, error="interrupted")
        gen = store.begin_generation(plan, vm, kind, {d.disk: "agent-digests" for d in disks})
        journal = _journal_root(ctx, target_name) if eff.method == "hot-backup" else None
        undo = UndoLog(journal, gen) if journal is not None else None
        if not final:
            hooks("pre")
        ctx.cancel.check()
        watch = None
        if eff.method == "hot-backup" and not final:
            tls = agent_tls(eff)

            def watch(name: str, have_base: bool) -> set[int] | None:
                return pushed_changes(ctx, eff, token, name, AGENT_CHUNK_SIZE, have_base, tls)

        warnings: list[str] = []
        freeze = _freeze(ctx, vm, disks[0], warnings) if final else None
        try:
            results = [_copy_one(ctx, vm, lock, d, i, by_index[i].copy_url, fresh[i], wrap, undo, watch, warnings)
                       for i, d in zip(indexes, disks, strict=True)]
        finally:
            if freeze is not None:
                _thaw(ctx, vm, disks[0])
        out.warnings.extend(warnings)
        if journal is not None:
            pruned = prune(journal)
            if pruned:
                ctx.reporter.log("debug", f"{vm}: pruned the journals of generations {pruned}", vm=vm)
        seconds = time.monotonic() - t0
        read = sum(r["bytes_read"] for r in results)
        stats: dict[str, Any] = {
            "bytes_read": read,
            "bytes_written": sum(r["bytes_written"] for r in results),
            "bytes_zero": sum(r["bytes_zero"] for r in results),
            "planned_bytes": sum(r["planned_bytes"] for r in results),
            "bytes_on_wire": sum(int(r.get("bytes_on_wire", 0)) for r in results),
            "seconds": round(seconds, 3),
            "throughput_bytes_per_s": int(read / seconds) if seconds > 0 else None,
            "disks": results,
            "source": "agent",
            "source_bytes_read": sum(int(r.get("source_bytes_read", 0)) for r in results),
        }
        try:  # what the agent used for this pass (its connections opened at the start)
            stats["agent"] = disks[0].agent_usage()
        except ScmtError as exc:
            ctx.reporter.log("debug", f"{vm}: no resource figures from the agent: {exc.message}", vm=vm)
        if freeze is not None:
            stats["freeze"] = freeze
        if undo is not None:
            stats["bytes_journaled"] = sum(int(r.get("bytes_journaled", 0)) for r in results)
            stats["journal"] = str(undo.folder)
        store.finish_generation(gen, ok=True, stats=stats)
        out.data["generation"] = gen
        return stats
    except BaseException as exc:
        if gen is not None:
            try:
                store.finish_generation(gen, ok=False, stats={},
                                        error=exc.message if isinstance(exc, ScmtError) else type(exc).__name__)
            except ScmtError:
                pass
        raise
    finally:
        for d in disks:
            d.close()
