"""Bad input and faults, end to end through ``scmt sync`` and the pyvmomi adapter against vcsim.

Every case checks the exit code (README's table), that the message names the
VM and the step where there is one, and then LISTS THE VM'S SNAPSHOTS over a
good connection: nothing may be left half-done on the vCenter (a snapshot the
tool could not remove while the vCenter was down is reported, and the next run
removes it).  Connection drops are real: a TCP relay on 127.0.0.1
(:mod:`.tcpproxy`) sits between the adapter and vcsim and closes connections.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.cli.main import main
from scmt_cli.errors import SourceOperationError

from . import vcsim as vcsim_mod
from . import vcsimplan
from .tcpproxy import Proxy
from .vcsimplan import VM

pytestmark = pytest.mark.vcsim


@pytest.fixture(scope="module")
def sim() -> Iterator[vcsim_mod.Vcsim]:
    yield from vcsimplan.sim_fixture()


@pytest.fixture
def proxy(sim: vcsim_mod.Vcsim) -> Iterator[Proxy]:
    px = Proxy(sim.host, sim.port)
    try:
        yield px
    finally:
        px.stop()


@pytest.fixture(autouse=True)
def _clean_vm(sim: vcsim_mod.Vcsim) -> Iterator[None]:
    yield
    vc = vcsimplan.adapter(sim)  # leave no snapshot behind for the next test, whatever happened
    try:
        for s in reversed(vc.list_snapshots(VM)):
            vc.remove_snapshot(VM, s.id)
    finally:
        vc.close()


def _sync(plan: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(["--json", "--state", str(state), "sync", str(plan)])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def _on_call(monkeypatch: pytest.MonkeyPatch, hook: Callable[[str], None]) -> None:
    """Call ``hook(method name)`` before every SOAP call of every adapter the command opens."""
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    login = PyVmomiVCenter._login

    def hooked_login(self: Any) -> None:
        login(self)
        stub = self._si._stub
        inner = stub.InvokeMethod

        def invoke(mo: Any, info: Any, args: Any, outer: Any = None) -> Any:
            hook(info.wsdlName)
            return inner(mo, info, args, outer)

        stub.InvokeMethod = invoke

    monkeypatch.setattr(PyVmomiVCenter, "_login", hooked_login)


def _url(port: int) -> str:
    return f"https://127.0.0.1:{port}/sdk"


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("wrong-password", 11, "login refused"),
        ("wrong-thumbprint", 12, "does not match the pinned"),
        ("unreachable", 10, "connection refused"),
    ],
)
def test_connection_refusals(sim: vcsim_mod.Vcsim, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             case: str, code: int, needle: str) -> None:  # fmt: skip
    kw: dict[str, Any] = {}
    if case == "wrong-password":
        kw["password"] = "Not-The-Password-4711"
    elif case == "wrong-thumbprint":
        kw["thumbprint"] = ":".join(["AB"] * 32)
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        kw["url"] = _url(sock.getsockname()[1])
        sock.close()
    plan = vcsimplan.write_plan(tmp_path / "lab", sim, **kw)
    rc, doc, err = _sync(plan, tmp_path / "s.db", capsys)
    assert rc == code, doc
    assert needle in doc["vms"][0]["error"] and doc["vms"][0]["vm"] == VM
    assert "Not-The-Password-4711" not in json.dumps(doc) + err and sim.password not in json.dumps(doc) + err
    assert vcsimplan.snapshots(sim) == []


def _expired_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "expired.pem", tmp_path / "expired.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, cert_file


def test_expired_certificate_in_front_of_a_real_vcenter(sim: vcsim_mod.Vcsim, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    ctx, cert_file = _expired_tls(tmp_path)
    px = Proxy(sim.host, sim.port, tls_context=ctx)  # vcsim's API, served with an expired certificate
    try:
        plan = vcsimplan.write_plan(tmp_path / "lab", sim, url=_url(px.port), ca_file=cert_file)
        rc, doc, _ = _sync(plan, tmp_path / "s.db", capsys)
    finally:
        px.stop()
    assert rc == 12 and "expired" in doc["vms"][0]["error"], doc
    assert vcsimplan.snapshots(sim) == []


def test_dropped_answers_are_retried_without_duplicates(sim: vcsim_mod.Vcsim, proxy: Proxy, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The vCenter did the work but the connection dropped before the answer: retried, no second snapshot."""
    data = vcsimplan.upload_disk(sim)
    cut: list[str] = []

    def hook(method: str) -> None:
        if method in ("CreateSnapshot_Task", "RemoveSnapshot_Task", "RetrievePropertiesEx") and method not in cut:
            cut.append(method)
            proxy.cut(1, after_bytes=40)  # forward the request, then close after 40 bytes of the answer

    _on_call(monkeypatch, hook)
    plan = vcsimplan.write_plan(tmp_path / "lab", sim, url=_url(proxy.port))
    rc, doc, _ = _sync(plan, tmp_path / "s.db", capsys)
    assert rc == 0, doc["vms"]
    assert proxy.cuts_done >= 3 and set(cut) == {"CreateSnapshot_Task", "RemoveSnapshot_Task", "RetrievePropertiesEx"}
    assert (tmp_path / "lab" / "target" / VM / "disk0.raw").read_bytes() == data
    assert vcsimplan.snapshots(sim) == []  # the retried create found its snapshot; the retried remove finished


def test_vcenter_going_down_mid_sync(
    sim: vcsim_mod.Vcsim,
    proxy: Proxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The vCenter vanishes right after the snapshot is made: exit 10 naming VM and step, the snapshot the
    tool could not remove is reported, and the next run removes it and completes."""
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    data = vcsimplan.upload_disk(sim)
    create = PyVmomiVCenter.create_snapshot

    def create_then_vanish(self: Any, vm: str, name: str, **kw: Any) -> str:
        snap = create(self, vm, name, **kw)
        if not name.startswith("scmt-sync-"):  # e.g. the stun cycle of enable_cbt
            return snap
        proxy.down = True  # new connections are closed at once...
        proxy.cut(10_000)  # ...and so is every request on the open ones
        return snap

    monkeypatch.setattr(PyVmomiVCenter, "create_snapshot", create_then_vanish)
    plan = vcsimplan.write_plan(tmp_path / "lab", sim, url=_url(proxy.port))
    rc, doc, err = _sync(plan, tmp_path / "s.db", capsys)
    assert rc == 10, doc
    msg = doc["vms"][0]["error"]
    assert msg.startswith(f"{VM}: read change ids: gave up after 4 attempts: the connection to ") and "dropped" in msg
    assert "could not remove snapshot" in err and "the next run removes it" in err
    [left] = vcsimplan.snapshots(sim)  # the reported leftover, nothing else
    assert re.fullmatch(r"scmt-sync-vc-g1-[0-9a-f]{8}", left), left

    monkeypatch.undo()
    proxy.down = False
    with proxy._lock:
        proxy._cuts.clear()
    rc, doc, err = _sync(plan, tmp_path / "s.db", capsys)
    assert rc in (0, 1), doc
    vm = doc["vms"][0]
    assert vm["ok"] and [x.split(" (")[0] for x in vm["leftover_snapshots_removed"]] == [left]
    assert (tmp_path / "lab" / "target" / VM / "disk0.raw").read_bytes() == data
    assert vcsimplan.snapshots(sim) == []


def test_a_snapshot_that_fails(
    sim: vcsim_mod.Vcsim, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """vcsim never fails a snapshot, so the fault comes back from the SOAP layer as vSphere would send it."""
    from pyVmomi import vim

    def hook(method: str) -> None:
        if method == "CreateSnapshot_Task":
            raise vim.fault.SnapshotFault(msg="insufficient disk space on datastore LocalDS_0")

    _on_call(monkeypatch, hook)
    plan = vcsimplan.write_plan(tmp_path / "lab", sim)
    rc, doc, _ = _sync(plan, tmp_path / "s.db", capsys)
    assert rc == 13, doc
    assert (
        doc["vms"][0]["error"]
        == f"{VM}: create snapshot: SnapshotFault: insufficient disk space on datastore LocalDS_0"
    )
    assert vcsimplan.snapshots(sim) == []
    monkeypatch.undo()
    vc = vcsimplan.adapter(sim)
    try:
        with pytest.raises(SourceOperationError, match=rf"{VM}: remove snapshot snapshot-404: "):
            vc.remove_snapshot(VM, "snapshot-404")
    finally:
        vc.close()


def test_power_calls_whose_answer_dropped_are_not_errors(sim: vcsim_mod.Vcsim, proxy: Proxy,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """PowerOff/PowerOn done by vCenter but answered on a dropped connection: the retry sees it done."""
    vm = "DC0_C0_RP0_VM0"
    cut: list[str] = []

    def hook(method: str) -> None:
        if method in ("PowerOffVM_Task", "PowerOnVM_Task") and method not in cut:
            cut.append(method)
            proxy.cut(1, after_bytes=40)

    _on_call(monkeypatch, hook)
    vc = vcsimplan.adapter(sim, host="127.0.0.1", port=proxy.port)
    try:
        before = proxy.cuts_done
        vc.power_off(vm)
        assert vc.power_state(vm) == "poweredOff"
        vc.power_on(vm)
        assert vc.power_state(vm) == "poweredOn"
        assert proxy.cuts_done == before + 2 and vc.calls["PowerOffVM_Task"] == 1 and vc.calls["PowerOnVM_Task"] == 1
        with pytest.raises(SourceOperationError, match=rf"{vm}: power on: InvalidPowerState"):
            vc.power_on(vm)  # a real second request is still refused
    finally:
        vc.close()


def test_vm_deleted_between_inventory_and_snapshot_in_a_sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone deletes the VM after scmt read the inventory: exit 13 naming the VM and the step; nothing left."""
    from scmt_cli.vsphere.adapter import PyVmomiVCenter

    own = vcsimplan.start_or_skip()  # this test destroys a VM: not on the shared simulator
    try:
        create = PyVmomiVCenter.create_snapshot

        def delete_then_create(self: Any, vm: str, name: str, **kw: Any) -> str:
            other = vcsimplan.adapter(own)
            try:
                ref = other._vm(vm)
                other.power_off(vm)
                other._wait(ref.Destroy_Task())
            finally:
                other.close()
            return create(self, vm, name, **kw)

        monkeypatch.setattr(PyVmomiVCenter, "create_snapshot", delete_then_create)
        plan = vcsimplan.write_plan(tmp_path / "lab", own)
        rc, doc, _ = _sync(plan, tmp_path / "s.db", capsys)
        assert rc == 13, doc
        assert doc["vms"][0]["error"].startswith(f"{VM}: create snapshot: ManagedObjectNotFound")
        vc = vcsimplan.adapter(own)
        try:
            inv = vc.inventory()
            assert VM not in {v.name for v in inv.vms}
            assert all(v.snapshots == () for v in inv.vms)  # no snapshot anywhere
        finally:
            vc.close()
    finally:
        own.stop()


def test_vcenter_going_down_while_answering_the_snapshot_request(
    sim: vcsim_mod.Vcsim,
    proxy: Proxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """vCenter made the snapshot, then vanished before answering: the message says the snapshot may exist,
    and the next run removes it."""
    vcsimplan.upload_disk(sim)
    vc = vcsimplan.adapter(sim)
    try:
        vc.enable_cbt(VM)  # so the sync's snapshot is the first CreateSnapshot_Task (no stun cycle)
    finally:
        vc.close()
    seen: list[str] = []

    def hook(method: str) -> None:
        if method == "CreateSnapshot_Task":
            proxy.cut(1, after_bytes=40)
        elif seen and seen[-1] == "CreateSnapshot_Task":
            proxy.down = True
            proxy.cut(10_000)
        seen.append(method)

    _on_call(monkeypatch, hook)
    plan = vcsimplan.write_plan(tmp_path / "lab", sim, url=_url(proxy.port))
    rc, doc, _ = _sync(plan, tmp_path / "s.db", capsys)
    assert rc == 10, doc
    msg = doc["vms"][0]["error"]
    assert msg.startswith(f"{VM}: create snapshot: gave up after 4 attempts: the connection to ")
    assert re.search(r"snapshot 'scmt-sync-vc-g1-[0-9a-f]{8}' may exist on the VM", msg), msg
    [left] = vcsimplan.snapshots(sim)
    assert left.startswith("scmt-sync-vc-g1-")
    monkeypatch.undo()
    proxy.down = False
    with proxy._lock:
        proxy._cuts.clear()
    rc, doc, _ = _sync(plan, tmp_path / "s.db", capsys)
    assert rc in (0, 1) and doc["vms"][0]["leftover_snapshots_removed"], doc
    assert vcsimplan.snapshots(sim) == []
