"""Incremental copies driven by the agent's own digests: only changed chunks cross the wire.

:func:`digest_incremental_copy` asks the source for the digest of every chunk
(:meth:`~scmt_cli.agent.transport.AgentDisk.remote_digests`, computed on the
agent with the algorithm and grid of :mod:`scmt_cli.blocks.digest`), compares
them with the manifest of the previous copy and copies only the chunks that
differ (:func:`~scmt_cli.blocks.api.changed_copy`): a chunk that became all
zeroes is zeroed on the target without reading anything.  A ``None`` entry
in the base (unknown) counts as changed.

Both ask the source through its interface (``remote_digests``, ``stats``),
which every wrapper forwards.
"""

from __future__ import annotations

from typing import Any

from scmt_cli.blocks.api import changed_copy
from scmt_cli.blocks.checkpoint import Checkpointer
from scmt_cli.blocks.digest import ZERO, Manifest
from scmt_cli.blocks.engine import CopyOptions, CopyOutcome
from scmt_cli.errors import SizeMismatchError
from scmt_cli.events import Reporter
from scmt_cli.transports.base import BlockSource, BlockTarget, Extent


def changed_extents(remote: list[str], base: Manifest) -> list[Extent]:
    """The chunks whose remote digest differs from ``base`` (``zero`` extents for chunks now all zeroes)."""
    if len(remote) != len(base.chunks):
        raise SizeMismatchError(f"the agent reports {len(remote)} chunks, the base manifest has {len(base.chunks)}")
    out: list[Extent] = []
    cs = base.chunk_size
    for i, (now, before) in enumerate(zip(remote, base.chunks, strict=True)):
        if before is not None and now == before:
            continue
        length = min(cs, base.size - i * cs)
        out.append(Extent(i * cs, length, "zero" if now == ZERO else "data"))
    return out


def wire_stats(source: BlockSource) -> dict[str, Any]:
    """``bytes_on_wire``/``bytes_of_data``/``compression_ratio`` of an agent source (``{}`` for others)."""
    return with_ratio(dict(source.stats()))


def with_ratio(stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with ``compression_ratio`` (data bytes per wire byte) when it has wire counters."""
    if "bytes_on_wire" not in stats:
        return stats
    wire, data = stats.get("bytes_on_wire", 0), stats.get("bytes_of_data", 0)
    stats["compression_ratio"] = round(data / wire, 3) if wire else None
    return stats


def digest_incremental_copy(source: BlockSource, target: BlockTarget, base: Manifest, *,
                            options: CopyOptions | None = None, checkpointer: Checkpointer | None = None,
                            resume: bool = False, reporter: Reporter | None = None,
                            remote: list[str] | None = None) -> CopyOutcome:
    """Bring ``target`` (which matches ``base``) up to date, reading only chunks whose remote digest changed.

    ``remote`` are the source's digests on the base's grid (asked from ``source.remote_digests`` when
    not given; it must then be supported).
    """
    if source.size != base.size:
        raise SizeMismatchError(
            f"the source has {source.size} bytes but the base manifest describes {base.size} bytes",
            hint="a resized disk needs a full copy")
    opts = options or CopyOptions(chunk_size=base.chunk_size)
    if remote is None:
        remote = source.remote_digests(base.chunk_size)
    if remote is None:
        raise TypeError(f"{source.describe()} computes no digests of its own (remote_digests is not supported)")
    changed = changed_extents(remote, base)
    out = changed_copy(source, target, changed, base=base, options=opts, checkpointer=checkpointer,
                       resume=resume, reporter=reporter)
    out.stats.extra["chunks_compared"] = len(remote)
    out.stats.extra["chunks_changed"] = len(changed)
    return out
