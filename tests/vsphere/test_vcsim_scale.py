"""The inventory of a vCenter with 100+ VMs takes a bounded number of SOAP round trips."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scmt_cli.vsphere.settings import ConnectionSettings

from . import vcsim as vcsim_mod

pytestmark = pytest.mark.vcsim


@pytest.fixture(scope="module")
def sims() -> Iterator[tuple[vcsim_mod.Vcsim, vcsim_mod.Vcsim]]:
    try:
        small = vcsim_mod.start(vms=1)
    except vcsim_mod.VcsimUnavailable as exc:
        if os.environ.get("SCMT_REQUIRE_VCSIM"):
            raise
        pytest.skip(f"vcsim unavailable: {exc}")
    big = vcsim_mod.start(vms=60)
    try:
        yield small, big
    finally:
        small.stop()
        big.stop()


def _inventory_calls(sim: vcsim_mod.Vcsim) -> tuple[int, int, dict[str, int]]:
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    settings = ConnectionSettings(
        host=sim.host, port=sim.port, user=sim.user, password=sim.password, thumbprint=sim.thumbprint
    )
    vc = PyVmomiVCenter(settings)
    vc.connect()
    try:
        vc.calls.clear()
        inv = vc.inventory()
        return len(inv.vms), sum(vc.calls.values()), dict(vc.calls)
    finally:
        vc.close()


def test_inventory_round_trips_do_not_grow_with_vm_count(sims: tuple[vcsim_mod.Vcsim, vcsim_mod.Vcsim]) -> None:
    small, big = sims
    n_small, calls_small, _ = _inventory_calls(small)
    n_big, calls_big, detail = _inventory_calls(big)
    assert n_small == 2 and n_big >= 100
    assert calls_big == calls_small, detail
    assert calls_big <= 5, detail  # CreateContainerView, RetrievePropertiesEx, DestroyView (+ a page)
    assert detail.get("RetrievePropertiesEx") == 1


def _per_vm_calls(sim: vcsim_mod.Vcsim, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, int], int]:
    """SOAP calls of one VM's snapshot and CBT work on a fresh connection, and full inventory reads made."""
    from scmt_cli.vsphere import _pvinventory
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    full_reads = [0]
    retrieve = _pvinventory.retrieve

    def counting(content: object) -> object:
        full_reads[0] += 1
        return retrieve(content)

    monkeypatch.setattr(_pvinventory, "retrieve", counting)
    settings = ConnectionSettings(
        host=sim.host, port=sim.port, user=sim.user, password=sim.password, thumbprint=sim.thumbprint
    )
    vc = PyVmomiVCenter(settings)
    vc.connect()
    try:
        vm = "DC0_H0_VM0"
        vc.calls.clear()
        vc.enable_cbt(vm)
        snap = vc.create_snapshot(vm, "scmt-rt")
        vc.disk_change_ids(vm, snap)
        vc.disk_capacities(vm, snap)
        vc.list_snapshots(vm)
        vc.remove_snapshot(vm, snap)
        vc.disable_cbt(vm)
        return dict(vc.calls), full_reads[0]
    finally:
        vc.close()


def test_per_vm_calls_do_not_fetch_the_inventory(
    sims: tuple[vcsim_mod.Vcsim, vcsim_mod.Vcsim], monkeypatch: pytest.MonkeyPatch
) -> None:
    small, big = sims
    calls_small, full_small = _per_vm_calls(small, monkeypatch)
    calls_big, full_big = _per_vm_calls(big, monkeypatch)
    assert full_small == full_big == 0  # no whole-inventory read behind a per-VM call
    assert calls_big["CreateContainerView"] == 1, calls_big  # the name -> moref map is read once, then cached
    # task polling may take one more round on a busier simulator; everything else is identical
    polls = ("RetrievePropertiesEx",)
    assert {k: v for k, v in calls_big.items() if k not in polls} == {
        k: v for k, v in calls_small.items() if k not in polls
    }
    assert calls_big["RetrievePropertiesEx"] <= calls_small["RetrievePropertiesEx"] + 6, (calls_small, calls_big)
