"""Is the source of a resumed copy still the disk the interrupted copy read?

A checkpoint says "every planned chunk below the watermark is on the target,
with these digests".  That is only worth resuming if the source still holds
those bytes: a source file replaced by another one of the same size, an NBD
export now serving another image, would leave a target that is half one disk
and half the other.  :func:`check_identity` then :func:`sample_unless_live`
prove it as far as the transport can:

* the source's :meth:`~scmt_cli.transports.base.BlockSource.identity` now must
  equal the one recorded at the start of the copy (a file: device, inode, size
  and mtime; an NBD export: its size; an agent disk: the device it serves and
  its size; a vSphere snapshot: the snapshot and its change id);
* for a source whose identity is ``stable`` (a disk not expected to change
  while read), a sample of :data:`SAMPLE_CHUNKS` chunks below the watermark is
  read again and its digests compared with the checkpoint's (the first and last
  copied chunk, and chunks spread between them from a random start).  A live
  disk (the scmt agent's) is expected to change, so only its identity counts.

Any difference is a :class:`~scmt_cli.errors.SourceChangedError` (exit 34)
that says what differs and how to start over.  Reading the sample costs at
most ``SAMPLE_CHUNKS x chunk_size`` bytes (32 MiB with 4 MiB chunks).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from scmt_cli.blocks.digest import ZERO, digest, is_zero
from scmt_cli.blocks.plan import chunk_range
from scmt_cli.errors import SourceChangedError
from scmt_cli.transports.base import BlockSource, Identity

#: Chunks below the watermark read again on a resume (for a stable source).
SAMPLE_CHUNKS = 8

START_OVER = "run the same command without --resume to copy the source again from the beginning"


def identity_json(source: BlockSource) -> dict[str, str | int | None] | None:
    """The source's identity as recorded in a checkpoint (None: the transport cannot tell)."""
    ident = source.identity()
    return ident.to_json() if ident is not None else None


def sample_indices(digests: Mapping[int, str | None], watermark: int, count: int = SAMPLE_CHUNKS,
                   rng: random.Random | None = None) -> list[int]:
    """Up to ``count`` chunk indices below ``watermark`` with a known digest: the first, the last and
    the rest spread evenly between them from a random start (so repeated resumes look at other chunks)."""
    known = sorted(i for i, d in digests.items() if i < watermark and d is not None)
    if len(known) <= count:
        return known
    r = rng or random.SystemRandom()
    picked = {known[0], known[-1]}
    inner = known[1:-1]
    step = len(inner) / (count - 2)
    start = r.random() * step
    for k in range(count - 2):
        picked.add(inner[min(len(inner) - 1, int(start + k * step))])
    return sorted(picked)


def check_identity(source: BlockSource, recorded: Mapping[str, object] | None) -> Identity | None:
    """Raise SourceChangedError unless the source's identity now is ``recorded`` (the checkpoint's); return it."""
    current = source.identity()
    now = current.to_json() if current is not None else None
    if dict(recorded or {}) != dict(now or {}):
        raise SourceChangedError(f"cannot resume: {source.describe()} is not the source the interrupted copy read "
                                 f"({_difference(recorded or {}, now or {})})", hint=START_OVER)
    return current


def check_sample(source: BlockSource, watermark: int, digests: Mapping[int, str | None], chunk_size: int, *,
                 rng: random.Random | None = None) -> int:
    """Re-read a sample of the chunks below ``watermark`` (see :func:`sample_indices`) and raise
    SourceChangedError if one differs from its checkpointed digest; return the number of chunks read.

    Call it only for a source with a stable identity, after the checkpoint's parameters (chunk size
    among them) were found equal to this copy's."""
    checked = 0
    for i in sample_indices(digests, watermark, rng=rng):
        off, length = chunk_range(i, source.size, chunk_size)
        data = source.read(off, length)
        want = digests[i]
        same = is_zero(data) if want == ZERO else digest(data) == want
        if not same:
            raise SourceChangedError(
                f"cannot resume: {source.describe()} changed since the interrupted copy read it (chunk {i} at offset "
                f"{off} differs from what was copied)", hint=START_OVER)
        checked += 1
    return checked


def sample_unless_live(source: BlockSource, current: Identity | None, watermark: int,
                       digests: Mapping[int, str | None], chunk_size: int, *,
                       rng: random.Random | None = None) -> int:
    """:func:`check_sample` unless ``current`` (what :func:`check_identity` returned) says the source is live
    (expected to change while read: only its identity counts); return the chunks read."""
    if current is not None and not current.stable:
        return 0
    return check_sample(source, watermark, digests, chunk_size, rng=rng)


def _difference(old: Mapping[str, object], new: Mapping[str, object]) -> str:
    keys = sorted(set(old) | set(new))
    parts = [f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(parts) or "identity differs"
