"""The libvirt platform against libvirt's built-in test:///default driver (no daemon)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.errors import ConfigError, PlanError, TargetPlatformError
from scmt_cli.events import RecordingReporter
from scmt_cli.targets import open_platform
from scmt_cli.targets.base import PlatformSpec

from .conftest import TWO_DISKS, spec_for

libvirt = pytest.importorskip("libvirt")

from scmt_cli.targets.libvirt import LibvirtPlatform  # noqa: E402

URI = "test:///default"


@pytest.fixture
def platform(tmp_path: Path, reporter: RecordingReporter) -> Any:
    p = open_platform({"type": "libvirt", "uri": URI, "path": str(tmp_path / "pool")}, reporter=reporter)
    assert isinstance(p, LibvirtPlatform)
    yield p
    p.close()


def test_full_lifecycle(platform: LibvirtPlatform, vm_name: str, tmp_path: Path) -> None:
    assert platform.state(vm_name).defined is False
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    assert Path(disks[0].copy_path).parent == tmp_path / "pool" / vm_name
    st = platform.define(spec_for(vm_name, disks, firmware="efi", secure_boot=True))
    assert (st.defined, st.power, st.network_connected, st.platform) == (True, "shutoff", True, "libvirt")

    dom = platform.conn.lookupByName(vm_name)
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert root.findtext("vcpu") == "2"
    assert [d.find("source").get("file") for d in root.findall("devices/disk")] == [d.path for d in disks]
    macs = [i.find("mac").get("address") for i in root.findall("devices/interface")]
    assert macs[0] == "00:50:56:aa:bb:01"  # kept as planned
    assert macs[1].startswith("52:54:00:")  # regenerated

    assert platform.start(vm_name).power == "running"
    assert platform.start(vm_name).power == "running"  # idempotent
    assert platform.stop(vm_name, graceful=True, timeout=5).power == "shutoff"
    assert platform.stop(vm_name).power == "shutoff"
    platform.start(vm_name)
    assert platform.stop(vm_name, graceful=False).power == "shutoff"
    assert platform.destroy(vm_name).defined is False
    assert platform.state(vm_name).defined is False
    assert platform.destroy(vm_name).defined is False  # idempotent
    assert Path(disks[0].copy_path).exists()


def test_isolate_a_stopped_vm_and_keep_it_isolated(platform: LibvirtPlatform, vm_name: str) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    platform.define(spec_for(vm_name, disks))
    st = platform.set_network(vm_name, False)
    assert st.network_connected is False
    assert platform.set_network(vm_name, False).network_connected is False
    # a redefine (e.g. a resumed failover) keeps the isolation
    assert platform.define(spec_for(vm_name, disks, cpus=4)).network_connected is False
    st = platform.start(vm_name)
    assert (st.power, st.network_connected) == ("running", False)
    platform.stop(vm_name, graceful=False)
    assert platform.set_network(vm_name, True).network_connected is True
    platform.destroy(vm_name)


def test_running_vm_link_change_unsupported_by_test_driver(platform: LibvirtPlatform, vm_name: str) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    platform.define(spec_for(vm_name, disks))
    platform.start(vm_name)
    with pytest.raises(TargetPlatformError, match="cannot change the link state of a running VM") as exc:
        platform.set_network(vm_name, False)
    assert exc.value.exit_code == 50
    assert vm_name in exc.value.message
    platform.destroy(vm_name)


class _LiveDomain:
    """A domain whose driver supports device updates (as qemu's does)."""

    def __init__(self, dom: Any) -> None:
        self._dom = dom
        self.updates: list[tuple[str, int]] = []

    def updateDeviceFlags(self, xml: str, flags: int) -> None:  # noqa: N802 - libvirt's name
        self.updates.append((xml, flags))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dom, name)


def test_running_vm_link_change_uses_update_device(
    platform: LibvirtPlatform, vm_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    platform.define(spec_for(vm_name, disks))
    platform.start(vm_name)
    live = _LiveDomain(platform.conn.lookupByName(vm_name))
    monkeypatch.setattr(platform, "_lookup", lambda vm: live)
    platform.set_network(vm_name, False)
    assert len(live.updates) == 2
    for xml, flags in live.updates:
        assert ET.fromstring(xml).find("link").get("state") == "down"
        assert flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE
    monkeypatch.undo()
    platform.destroy(vm_name)


def test_errors_name_vm_and_step(platform: LibvirtPlatform, vm_name: str) -> None:
    with pytest.raises(
        TargetPlatformError, match=f"{vm_name}: start: the VM is not defined on libvirt:test:///default"
    ):
        platform.start(vm_name)
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    platform.define(spec_for(vm_name, disks))
    platform.conn.lookupByName(vm_name).create()
    # a libvirt error (starting a running domain behind our back) becomes exit 50 with VM and step
    with pytest.raises(TargetPlatformError, match=f"{vm_name}: define: libvirt: "):
        with platform._step(vm_name, "define"):
            platform.conn.lookupByName(vm_name).create()
    platform.destroy(vm_name)


def test_bad_uri_is_target_unreachable(tmp_path: Path) -> None:
    from scmt_cli.errors import TargetUnreachableError

    with pytest.raises(TargetUnreachableError, match="cannot connect to libvirt at test:///nonexistent-file.xml"):
        LibvirtPlatform("test:///nonexistent-file.xml", tmp_path)


def test_password_in_uri_is_not_shown(tmp_path: Path) -> None:
    from scmt_cli.errors import TargetUnreachableError

    with pytest.raises(TargetUnreachableError) as exc:
        LibvirtPlatform("test://admin:hunter2@/nonexistent-file.xml", tmp_path)
    assert "hunter2" not in exc.value.message


def test_missing_binding_is_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scmt_cli.targets.libvirt as mod

    monkeypatch.setattr(mod, "_libvirt", None)
    with pytest.raises(ConfigError, match="libvirt-python") as exc:
        open_platform(PlatformSpec(type="libvirt", uri=URI, path=str(tmp_path)))
    assert exc.value.exit_code == 5


def test_domain_type_option(tmp_path: Path, vm_name: str) -> None:
    spec = PlatformSpec.from_mapping({"type": "libvirt", "uri": URI, "path": str(tmp_path), "domain_type": "qemu"})
    with LibvirtPlatform(URI, tmp_path, spec=spec) as p:
        disks = p.prepare_disks(vm_name, TWO_DISKS)
        p.define(spec_for(vm_name, disks))
        assert ET.fromstring(p.conn.lookupByName(vm_name).XMLDesc(0)).get("type") == "qemu"
        p.destroy(vm_name, remove_disks=True)
    assert not (tmp_path / vm_name).exists()
    bad = PlatformSpec.from_mapping({"type": "libvirt", "uri": URI, "path": str(tmp_path), "domain_type": "xen"})
    with pytest.raises(PlanError, match="domain_type 'xen'"):
        LibvirtPlatform(URI, tmp_path, spec=bad)


def test_convert_on_libvirt_skips_when_direct(platform: LibvirtPlatform, vm_name: str) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    assert platform.convert(spec_for(vm_name, disks), direct=True).ran is False


# -- domain type auto, console log, transient domains --------------------------------------------------------
CAPS = """<capabilities><host><cpu><arch>x86_64</arch><model>EPYC</model>{features}</cpu></host>
  <guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/>{kvm}</arch></guest></capabilities>"""


class _QemuConn:
    """What _auto_domain_type asks a QEMU-driver connection."""

    def __init__(self, kvm: bool, features: tuple[str, ...]) -> None:
        self.caps = CAPS.format(kvm="<domain type='kvm'/>" if kvm else "",
                                features="".join(f"<feature name='{f}'/>" for f in features))

    def getType(self) -> str:  # noqa: N802 - libvirt's name
        return "QEMU"

    def getCapabilities(self) -> str:  # noqa: N802 - libvirt's name
        return self.caps


@pytest.mark.parametrize(("uri", "kvm", "features", "local_ok", "want"), [
    ("qemu+ssh://kvm01/system", True, ("vmx", "avx"), True, "kvm"),
    ("qemu+ssh://kvm01/system", True, ("svm",), True, "kvm"),
    ("qemu+ssh://kvm01/system", True, ("avx", "hypervisor"), True, "qemu"),  # nested virtualization off
    ("qemu+ssh://kvm01/system", False, ("vmx",), True, "qemu"),  # no /dev/kvm there
    ("qemu:///system", True, (), True, "kvm"),  # local: the same check as scmt boot decides
    ("qemu+unix:///system?socket=/x/sock", True, ("vmx",), False, "qemu"),
])
def test_domain_type_auto_picks_kvm_only_where_kvm_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, kvm: bool, features: tuple[str, ...],
        local_ok: bool, want: str) -> None:
    import scmt_cli.targets.qemu as qemu

    monkeypatch.setattr(qemu, "kvm_usable", lambda: (local_ok, "" if local_ok else "/dev/kvm opens but no vmx/svm"))
    reporter = RecordingReporter()
    with LibvirtPlatform(URI, tmp_path, reporter=reporter) as p:
        real, p.uri = p.conn, uri
        p.conn = _QemuConn(kvm, features)
        assert p.domain_type == want
        p.conn = real
    warned = [m["message"] for m in reporter.of_type("log") if "KVM does not work there" in m["message"]]
    assert bool(warned) == (want == "qemu")


def test_domain_type_auto_on_other_drivers_is_kvm(platform: LibvirtPlatform) -> None:
    assert platform.domain_type == "kvm"  # libvirt's test driver


def test_the_serial_console_is_logged_to_the_vm_folder(platform: LibvirtPlatform, vm_name: str,
                                                       tmp_path: Path) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    platform.define(spec_for(vm_name, disks))
    root = ET.fromstring(platform.conn.lookupByName(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    log = root.find("devices/serial/log")
    assert log is not None and log.get("file") == str(tmp_path / "pool" / vm_name / "console.log")
    assert log.get("append") == "off"
    assert platform.console_log(vm_name) == tmp_path / "pool" / vm_name / "console.log"


def test_accel_changes_the_domain_type_of_a_stopped_domain(platform: LibvirtPlatform, vm_name: str) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    platform.define(spec_for(vm_name, disks))
    assert platform.domain_info(vm_name) == (False, "kvm")
    platform.set_domain_type(vm_name, "qemu")
    assert platform.domain_info(vm_name) == (False, "qemu")
    platform.start(vm_name)
    assert platform.is_active(vm_name)
    platform.power_off(vm_name)
    assert not platform.is_active(vm_name)


def test_a_transient_test_domain_is_gone_once_powered_off(platform: LibvirtPlatform, vm_name: str,
                                                          tmp_path: Path) -> None:
    disks = platform.prepare_disks(vm_name, TWO_DISKS)
    spec = spec_for(vm_name + "-scmt-test", disks)
    name = platform.run_transient(spec, tmp_path / "t" / "console.log")
    dom = platform.conn.lookupByName(name)
    assert dom.isActive() and not dom.isPersistent()
    assert all(i.find("link").get("state") == "down"
               for i in ET.fromstring(dom.XMLDesc(0)).findall("devices/interface"))
    assert platform.run_transient(spec, tmp_path / "t" / "console.log") == name  # a leftover is replaced
    assert platform.stop_transient(name) is True
    assert not platform.is_active(name) and platform.state(name).defined is False
    assert platform.stop_transient(name) is False  # idempotent
    platform.define(spec_for(vm_name, disks))
    with pytest.raises(TargetPlatformError, match="persistent domain of this name exists"):
        platform.run_transient(spec_for(vm_name, disks), tmp_path / "t" / "console.log")
    platform.start(vm_name)
    with pytest.raises(TargetPlatformError, match="not a test copy of scmt"):
        platform.stop_transient(vm_name)
    assert platform.is_active(vm_name)
