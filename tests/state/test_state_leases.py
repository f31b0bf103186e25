"""Fleet leases: one VM per claim, global limits over every host's leases, expiry, the event trail."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.state import StateStore
from scmt_cli.state.leases import Limits, Placement, claim, drop_lease, live_leases, release

from .conftest import DIGEST, FakeClock

STORE_BACKENDS = ("sqlite", "postgresql")
VMS = [f"vm{i:02d}" for i in range(6)]


@pytest.fixture
def two(db: Path | str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch):
    """Two stores on one database, standing for two hosts (the host id is read at each call)."""
    with StateStore.open(db, clock=clock) as a, StateStore.open(db, clock=clock) as b:
        a.record_plan("p", "/p.yaml", DIGEST)
        for vm in VMS:
            a.upsert_vm("p", vm)
        yield a, b


def as_host(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("SCMT_HOST_ID", name)


def test_claims_split_vms_and_hold_the_global_concurrency(two, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    limits = Limits(concurrency=3)
    as_host(monkeypatch, "host-a")
    la, _ = claim(a, "p", VMS, limits=limits, heartbeat=False)
    la2, _ = claim(a, "p", VMS, limits=limits, heartbeat=False)
    as_host(monkeypatch, "host-b")
    lb, _ = claim(b, "p", VMS, limits=limits, heartbeat=False)
    none, why = claim(b, "p", VMS, limits=limits, heartbeat=False)
    assert none is None and "all 3 slots" in why
    held = live_leases(b, "p")
    assert sorted(held) == ["vm00", "vm01", "vm02"]
    assert {held[v].hostname for v in held} == {"host-a", "host-b"}
    assert lb is not None and lb.resource == "vm:p/vm02"
    release(b, "p", "vm02", lb, outcome="ok")
    again, _ = claim(b, "p", VMS, limits=limits, heartbeat=False)
    assert again is not None and again.resource == "vm:p/vm02"  # the slot came back; vm00/vm01 still leased
    kinds = [(e.kind, e.vm, e.data.get("host")) for e in a.events(kinds=["lease_acquired", "lease_released"])]
    assert kinds == [("lease_acquired", "vm00", "host-a"), ("lease_acquired", "vm01", "host-a"),
                     ("lease_acquired", "vm02", "host-b"), ("lease_released", "vm02", "host-b"),
                     ("lease_acquired", "vm02", "host-b")]
    for lk in (la, la2, again):
        assert lk is not None
        lk.release()


def test_per_esxi_host_and_per_datastore_limits(two, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    where = {
        "vm00": Placement("esx1", ("ds1",)), "vm01": Placement("esx1", ("ds2",)),
        "vm02": Placement("esx2", ("ds1",)), "vm03": Placement("esx2", ("ds2",)),
    }
    limits = Limits(concurrency=10, per_esxi_host=1, per_datastore=1)
    as_host(monkeypatch, "host-a")
    first, _ = claim(a, "p", ["vm00", "vm01", "vm02", "vm03"], limits=limits, placement=where, heartbeat=False)
    as_host(monkeypatch, "host-b")
    # vm01 shares esx1 with vm00, vm02 shares ds1: only vm03 fits
    second, _ = claim(b, "p", ["vm01", "vm02", "vm03"], limits=limits, placement=where, heartbeat=False)
    third, why = claim(b, "p", ["vm01", "vm02"], limits=limits, placement=where, heartbeat=False)
    assert first is not None and first.resource == "vm:p/vm00"
    assert second is not None and second.resource == "vm:p/vm03"
    assert third is None and "at its limit of 1" in why
    first.release()
    second.release()


def test_expired_lease_is_reaped_logged_and_claimable(two, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    as_host(monkeypatch, "host-a")
    dead, _ = claim(a, "p", ["vm00"], limits=Limits(1), lease_seconds=10, heartbeat=False)
    assert dead is not None
    as_host(monkeypatch, "host-b")
    assert claim(b, "p", ["vm00"], limits=Limits(1), heartbeat=False)[0] is None
    clock.advance(11)  # host-a stopped renewing
    took, _ = claim(b, "p", ["vm00"], limits=Limits(1), heartbeat=False)
    assert took is not None
    expired = b.events(kinds=["lease_expired"])
    assert len(expired) == 1 and expired[0].vm == "vm00" and expired[0].data["previous"]["hostname"] == "host-a"
    assert expired[0].data["reason"] == "lease expired"
    with pytest.raises(Exception, match="lost the lock"):  # the old holder finds out at its next check
        dead.renew()
    took.release()


def test_drop_lease_only_deletes_the_owners_row(two, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = two
    lk, _ = claim(a, "p", ["vm00"], limits=Limits(1), heartbeat=False)
    assert lk is not None
    assert not drop_lease(a, "p", "vm00", "somebody-else")
    assert drop_lease(a, "p", "vm00", lk.owner)
    assert live_leases(a, "p") == {}
    assert a.events(kinds=["lease_released"])[-1].data["outcome"] == "late"
