"""A changed-block answer that does not fit the disk is a source operation error naming the VM and disk."""

from __future__ import annotations

import pytest

from scmt_cli.services.migration.context import MigrationContext
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.transports.base import Extent
from scmt_cli.vsphere.api import ChangedAreas
from tests.migration.conftest import Lab


def test_a_cbt_answer_past_the_end_of_the_disk_is_exit_13_not_an_internal_error(
        lab: Lab, ctx: MigrationContext, monkeypatch: pytest.MonkeyPatch) -> None:
    from scmt_cli.lab.vcenter import FakeVCenter

    def bad_answer(self: FakeVCenter, vm: str, snapshot: str, disk_key: int, change_id: str,
                   **kw: object) -> ChangedAreas:
        cap = lab.estate.vm(vm).disks[disk_key].capacity
        return ChangedAreas((Extent(0, 4096), Extent(cap - 4096, 8192)), queries=1)

    monkeypatch.setattr(FakeVCenter, "changed_areas", bad_answer)
    out = run_sync(SyncRequest(lab.plan, vms=("web01",)), ctx).last["web01"]
    assert not out.ok
    assert out.error_code == 13, out.error
    cap = lab.estate.vm("web01").disks[2000].capacity
    assert "web01" in (out.error or "") and "2000" in (out.error or "")
    assert f"offset {cap - 4096}" in (out.error or "") and "outside the disk" in (out.error or "")
