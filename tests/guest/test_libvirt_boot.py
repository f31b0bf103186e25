"""The real lab guest on a ``type: libvirt`` target, booted by libvirt's QEMU driver (a private libvirtd).

* failover onto libvirt starts the domain (type ``qemu``, TCG, where KVM does not work); ``scmt boot`` reads
  its console log and the guest reports exactly the data of quiesce; once the guest has powered itself off,
  ``scmt boot`` starts the domain itself;
* a test failover converts a clone of the synced disks (real virt-v2v-in-place) and boots it as a transient,
  isolated libvirt domain; nothing of the VM changes; ``--cleanup`` removes it.

Slow (minutes under TCG); run these one at a time.
"""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.cli.main import main
from scmt_cli.events import CallbackReporter
from scmt_cli.services.migration.boot import BootRequest, run_boot
from scmt_cli.services.migration.context import open_context
from scmt_cli.services.migration.failover import FailoverRequest, run_failover
from scmt_cli.services.migration.status import StatusRequest, status_service
from scmt_cli.services.migration.sync import SyncRequest, run_sync
from scmt_cli.services.migration.testfailover import run_test_cleanup, run_test_failover
from scmt_cli.state import StateStore
from scmt_cli.targets.qemu import kvm_usable
from tests.guest.conftest import VM, GuestLab, need
from tests.guest.libvirtd import BRIDGE, PrivateLibvirtd

pytestmark = pytest.mark.slow


@dataclass
class LibvirtLab:
    lab: GuestLab
    daemon: PrivateLibvirtd
    storage: Path

    @property
    def plan(self) -> Path:
        return self.lab.plan

    def conn(self) -> Any:
        import libvirt

        return libvirt.open(self.daemon.uri)


@pytest.fixture
def libvirt_lab(guest_lab: GuestLab, libvirtd: PrivateLibvirtd) -> LibvirtLab:
    """The guest lab's plan, pointed at the private libvirtd (disks under storage['*'], NIC on its bridge)."""
    storage = guest_lab.root / "kvm-images"
    text = guest_lab.plan.read_text()
    assert "  type: dir\n  path: target\n" in text and '"VM Network": default' in text
    text = text.replace("  type: dir\n  path: target\n",
                        f"  type: libvirt\n  uri: {libvirtd.uri}\n  storage:\n    \"*\": {storage}\n")
    text = text.replace('"VM Network": default', f'"VM Network": "bridge:{BRIDGE}"')
    guest_lab.plan.write_text(text)
    return LibvirtLab(guest_lab, libvirtd, storage)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_type() -> str:
    return "kvm" if kvm_usable()[0] else "qemu"


@pytest.mark.timeout(1500)
def test_failover_onto_libvirt_then_boot_sees_the_data_of_quiesce(libvirt_lab: LibvirtLab, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    lab = libvirt_lab.lab
    at_quiesce: dict[str, str] = {}

    def tap(kind: str, data: dict[str, Any]) -> None:
        if kind == "event" and data["kind"] == "source_quiesced":
            at_quiesce[data["vm"]] = lab.files.digest()

    state = lab.root / "state.db"
    with StateStore.open(state) as store:
        ctx = open_context(lab.plan, store, CallbackReporter(tap))
        try:
            for _ in range(2):
                assert not run_sync(SyncRequest(lab.plan), ctx).failed
                assert lab.files.write_random(1)
            # --direct: the guest keeps its VMware-like drivers and boots on SATA (the conversion is proven on
            # the dir target and in the test failover below)
            fo = run_failover(FailoverRequest(lab.plan, vms=(VM,), source_action="shutdown", direct=True), ctx)
            out = fo.outcomes[0]
            assert out.ok, out.error
            expected = at_quiesce[VM]
            conn = libvirt_lab.conn()
            try:
                dom = conn.lookupByName(VM)
                assert dom.isActive()  # failover started it through libvirt
                root = ET.fromstring(dom.XMLDesc(0))
                assert root.get("type") == _expected_type()
                assert root.find("devices/interface/source").get("bridge") == BRIDGE
                log = root.find("devices/serial/log")
                assert log is not None and log.get("file") == str(libvirt_lab.storage / VM / "console.log")
            finally:
                conn.close()

            booted = run_boot(BootRequest(lab.plan, VM, expect=expected, timeout_s=900, stall_s=300), ctx)
            o = booted.outcome
            assert o is not None and o.booted and o.platform == "libvirt" and o.domain == VM
            assert o.accel == ("kvm" if _expected_type() == "kvm" else "tcg")
            assert o.guest_value == expected and booted.data_verified is True
            assert "files=3" in (o.ready_line or "")  # the seed file and the two written before quiesce
            view = status_service(StatusRequest(lab.plan), store, CallbackReporter(lambda *_: None)).vms[0]
            assert view.boot_seconds == o.seconds and view.boot_data_verified is True
            figures = f"libvirt boot after failover {o.seconds} s ({o.accel}): {o.ready_line}"
        finally:
            ctx.close()

    # the lab guest powers itself off after its line; scmt boot then starts the domain itself
    conn = libvirt_lab.conn()
    try:
        deadline = time.monotonic() + 180
        while conn.lookupByName(VM).isActive() and time.monotonic() < deadline:
            time.sleep(1)
        assert not conn.lookupByName(VM).isActive()
    finally:
        conn.close()
    capsys.readouterr()
    code = main(["--json", "--state", str(state), "boot", str(lab.plan), "--vm", VM, "--expect", expected,
                 "--timeout", "15m", "--stall", "5m"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["boot"]["booted"] is True and doc["boot"]["data_verified"] is True
    assert doc["boot"]["platform"] == "libvirt" and doc["boot"]["seconds"] > 0
    with capsys.disabled():
        print(f"\nfigures: {figures}; libvirt boot started by scmt boot {doc['boot']['seconds']} s")


@pytest.mark.timeout(1800)
def test_test_failover_on_libvirt_boots_a_converted_clone_as_a_transient_domain(
        libvirt_lab: LibvirtLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("virt-v2v-in-place", "qemu-img")
    monkeypatch.setenv("LIBGUESTFS_BACKEND", "direct")
    if not kvm_usable()[0]:
        monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")  # KVM hangs on these machines (GUEST.md)
    lab = libvirt_lab.lab
    synced = libvirt_lab.storage / VM / "disk0.raw"
    with StateStore.open(lab.root / "state.db") as store:
        ctx = open_context(lab.plan, store, CallbackReporter(lambda *_: None))
        try:
            assert not run_sync(SyncRequest(lab.plan), ctx).failed
            assert lab.files.write_random(1)
            assert not run_sync(SyncRequest(lab.plan), ctx).failed
            source_before, synced_before = _sha(lab.source_disk), _sha(synced)
            state_before = ctx.status(VM)[0]
            expected = lab.files.digest()
            res = run_test_failover(BootRequest(lab.plan, VM, expect=expected, timeout_s=900, stall_s=300), ctx)
            o = res.outcome
            assert o is not None and o.booted and res.data_verified is True
            assert o.platform == "libvirt" and o.domain == f"{VM}-scmt-test"
            conv = res.conversion or {}
            assert conv["ran"] is True and conv["virtio_drivers"] is True  # booted on virtio after conversion
            assert res.clone is not None and res.clone["method"] in ("reflink", "sparse copy")
            test_dir = Path(res.test_dir or "")
            assert Path(conv["log"]).parent == test_dir and "Converting" in Path(conv["log"]).read_text()
            assert not list((libvirt_lab.storage / VM).glob(".v2v-*"))
            print(f"\nfigures: clone {res.clone}, conversion {conv['seconds']} s, test boot on libvirt "
                  f"{o.seconds} s ({o.accel}): {o.ready_line}")
            assert _sha(lab.source_disk) == source_before
            assert _sha(synced) == synced_before
            assert ctx.status(VM)[0] == state_before
            conn = libvirt_lab.conn()
            try:
                assert VM not in [d.name() for d in conn.listAllDomains()]  # the VM itself was never defined
            finally:
                conn.close()
            cleaned = run_test_cleanup(BootRequest(lab.plan, VM), ctx)
            assert str(test_dir) in cleaned.removed and not test_dir.exists()
            conn = libvirt_lab.conn()
            try:
                assert f"{VM}-scmt-test" not in [d.name() for d in conn.listAllDomains()]
            finally:
                conn.close()
        finally:
            ctx.close()
