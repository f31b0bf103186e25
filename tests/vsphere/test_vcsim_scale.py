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
