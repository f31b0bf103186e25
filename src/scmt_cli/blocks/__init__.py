"""The block copy engine.

Public API (services use these; see each module for its contract):

* :mod:`~scmt_cli.blocks.api` - :func:`full_copy`, :func:`incremental_copy`
  (digest comparison against a previous manifest) and :func:`changed_copy`
  (an explicit changed-extent list, e.g. from CBT; reads nothing else);
* :mod:`~scmt_cli.blocks.engine` - :class:`CopyOptions`, :class:`CopyStats`,
  :class:`CopyOutcome` and the pipelined :func:`copy_chunks`;
* :mod:`~scmt_cli.blocks.plan` - the fixed chunk grid and extent planning;
* :mod:`~scmt_cli.blocks.digest` - XXH3-128 digests, zero detection,
  :class:`Manifest`;
* :mod:`~scmt_cli.blocks.checkpoint` - the :class:`CheckpointStore` protocol
  (the SQLite ``StateStore`` satisfies it), :class:`MemoryCheckpointStore`,
  :class:`Checkpointer`;
* :mod:`~scmt_cli.blocks.verify` - :func:`verify_target`.
"""

from scmt_cli.blocks.api import changed_copy, full_copy, incremental_copy, plan_source
from scmt_cli.blocks.checkpoint import Checkpointer, CheckpointStore, MemoryCheckpointStore, checkpoint_key
from scmt_cli.blocks.digest import Manifest
from scmt_cli.blocks.engine import CopyOptions, CopyOutcome, CopyStats, copy_chunks
from scmt_cli.blocks.verify import verify_target

__all__ = [
    "CheckpointStore",
    "Checkpointer",
    "CopyOptions",
    "CopyOutcome",
    "CopyStats",
    "Manifest",
    "MemoryCheckpointStore",
    "changed_copy",
    "checkpoint_key",
    "copy_chunks",
    "full_copy",
    "incremental_copy",
    "plan_source",
    "verify_target",
]
