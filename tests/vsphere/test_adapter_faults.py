"""pyvmomi adapter against vcsim: retries on transient faults only, re-login, vanished VMs."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from typing import Any

import pytest

from scmt_cli.errors import SourceOperationError, SourceUnreachableError
from scmt_cli.events import RecordingReporter
from scmt_cli.vsphere.settings import ConnectionSettings

from . import vcsim as vcsim_mod

pytestmark = pytest.mark.vcsim


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim_mod.Vcsim]:
    try:
        s = vcsim_mod.start(vms=1)
    except vcsim_mod.VcsimUnavailable as exc:
        if os.environ.get("SCMT_REQUIRE_VCSIM"):
            raise
        pytest.skip(f"vcsim unavailable: {exc}")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def vc(sim: vcsim_mod.Vcsim) -> Iterator[Any]:
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    settings = ConnectionSettings(
        host=sim.host, port=sim.port, user=sim.user, password=sim.password, thumbprint=sim.thumbprint
    )
    client = PyVmomiVCenter(settings, RecordingReporter())
    client.connect()
    try:
        yield client
    finally:
        client.close()


def _drop(vc: Any, method: str, times: int) -> list[int]:
    """Make the next ``times`` calls of ``method`` fail as if the connection dropped."""
    stub = vc._si._stub
    inner = stub.InvokeMethod
    left = [times]

    def flaky(mo: Any, info: Any, args: Any, outer: Any = None) -> Any:
        if info.wsdlName == method and left[0] > 0:
            left[0] -= 1
            vc.calls[method] += 1
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        return inner(mo, info, args, outer)

    stub.InvokeMethod = flaky
    return left


def test_dropped_connection_is_retried(vc: Any) -> None:
    _drop(vc, "RetrievePropertiesEx", 2)
    vc.calls.clear()
    inv = vc.inventory()
    assert len(inv.vms) == 2
    assert vc.calls["RetrievePropertiesEx"] == 3  # two dropped, one answered


def test_connection_that_stays_down_names_vm_and_step(vc: Any) -> None:
    vm = vc.inventory().vms[0].name
    _drop(vc, "CreateSnapshot_Task", 99)
    with pytest.raises(SourceUnreachableError, match=rf"{vm}: create snapshot: gave up after 4 attempts") as info:
        vc.create_snapshot(vm, "scmt-x")
    assert info.value.exit_code == 10 and "connection to" in info.value.message
    assert vc.list_snapshots(vm) == []


def test_permanent_fault_is_not_retried(vc: Any) -> None:
    vm = vc.inventory().vms[0].name
    vc.calls.clear()
    with pytest.raises(SourceOperationError, match=rf"{vm}: power on: InvalidPowerState"):
        vc.power_on(vm)
    assert vc.calls["PowerOnVM_Task"] == 1


def test_expired_session_logs_in_again(vc: Any) -> None:
    vc._content.sessionManager.Logout()
    inv = vc.inventory()
    assert inv.vms
    assert any("logging in again" in r["message"] for r in vc.reporter.of_type("log"))


def test_vm_deleted_between_inventory_and_snapshot(vc: Any, sim: vcsim_mod.Vcsim) -> None:
    inv = vc.inventory()
    vm = next(v.name for v in inv.vms if v.power_state == "poweredOn")
    ref = vc._vm(vm)
    vc.power_off(vm)
    vc._wait(ref.Destroy_Task())
    with pytest.raises(SourceOperationError, match=rf"{vm}: create snapshot: ManagedObjectNotFound") as info:
        vc.create_snapshot(vm, "scmt-gone")
    assert info.value.exit_code == 13
    assert vm not in {v.name for v in vc.inventory().vms}
