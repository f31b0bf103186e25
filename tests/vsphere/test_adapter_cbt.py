"""The adapter's QueryChangedDiskAreas loop, with a scripted vCenter (vcsim lacks the call)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from scmt_cli.errors import SourceOperationError
from scmt_cli.vsphere.settings import ConnectionSettings

MiB = 1024 * 1024
CID = "52 aa bb cc dd ee ff 00-11 22 33 44 55 66 77 88/41"


def make(areas_per_call: list[tuple[int, int, list[tuple[int, int]]]] | Exception, change_id: str | None = CID):
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    vc = PyVmomiVCenter(ConnectionSettings(host="vc.test", user="u", password="p"), attempts=2)
    vc._si = object()  # "connected"
    starts: list[int] = []
    disk = SimpleNamespace(key=2000, capacityInBytes=16 * MiB, capacityInKB=None,
                           backing=SimpleNamespace(changeId=change_id))  # fmt: skip
    answers = list(areas_per_call) if isinstance(areas_per_call, list) else []

    def query(snapshot: Any, deviceKey: int, startOffset: int, changeId: str) -> Any:  # noqa: N803
        starts.append(startOffset)
        if isinstance(areas_per_call, Exception):
            raise areas_per_call
        start, length, areas = answers.pop(0)
        return SimpleNamespace(startOffset=start, length=length,
                               changedArea=[SimpleNamespace(start=o, length=n) for o, n in areas])  # fmt: skip

    ref = SimpleNamespace(QueryChangedDiskAreas=query)
    vc._vm = lambda name: ref  # type: ignore[method-assign]
    vc._snapshot = lambda r, s: "snap"  # type: ignore[method-assign]
    vc._snapshot_disks = lambda vm, snap: {2000: disk}  # type: ignore[method-assign]
    return vc, starts


def test_loop_covers_capacity_and_never_asks_at_capacity() -> None:
    vc, starts = make([
        (0, 4 * MiB, [(0, 65536), (65536, 65536)]),
        (4 * MiB, 8 * MiB, [(5 * MiB, 4096)]),
        (12 * MiB, 4 * MiB, [(16 * MiB - 512, 512)]),
    ])  # fmt: skip
    res = vc.changed_areas("vm1", "snapshot-1", 2000, CID.replace("/41", "/7"))
    assert starts == [0, 4 * MiB, 12 * MiB]  # never 16 MiB
    assert [(e.offset, e.length) for e in res.extents] == [(0, 131072), (5 * MiB, 4096), (16 * MiB - 512, 512)]
    assert res.queries == 3 and not res.reset


def test_an_answer_that_does_not_advance_is_an_error() -> None:
    vc, _ = make([(0, 0, [])])
    with pytest.raises(SourceOperationError, match="refusing to loop"):
        vc.changed_areas("vm1", "snapshot-1", 2000, "*")


def test_file_fault_and_uuid_change_mean_full_resync() -> None:
    from pyVmomi import vim

    vc, _ = make(vim.fault.FileFault(msg="Error caused by file /vmfs/volumes/x/vm1.vmdk"))
    res = vc.changed_areas("vm1", "snapshot-1", 2000, "*")
    assert res.reset and "FileFault" in (res.reason or "")
    vc, starts = make([])
    res = vc.changed_areas("vm1", "snapshot-1", 2000, "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/3")
    assert res.reset and "reset" in (res.reason or "") and starts == []
    vc, starts = make([], change_id=None)
    assert vc.changed_areas("vm1", "snapshot-1", 2000, CID).reset and starts == []
    vc, starts = make([])
    res = vc.changed_areas("vm1", "snapshot-1", 2000, CID, previous_capacity=8 * MiB)
    assert res.reset and "resized" in (res.reason or "")
