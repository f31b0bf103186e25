"""Domain XML: well-formed, escaped, and carrying the planned hardware."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from scmt_cli.errors import TargetPlatformError
from scmt_cli.targets.base import TargetDisk, TargetNic, TargetVmSpec
from scmt_cli.targets.domxml import _dev_name, build_domain_xml, interfaces_xml, link_is_up, set_link_state


def _spec(**kw: object) -> TargetVmSpec:
    base: dict[str, object] = {
        "name": "web01",
        "cpus": 4,
        "memory_mib": 2048,
        "disks": (TargetDisk("/t/web01/disk0.raw"), TargetDisk("/t/web01/disk1.qcow2", "qcow2")),
        "nics": (TargetNic("lan", "00:50:56:aa:bb:cc"), TargetNic("bridge:br0")),
    }
    base.update(kw)
    return TargetVmSpec(**base).validated()  # type: ignore[arg-type]


def test_bios_vm_hardware() -> None:
    root = ET.fromstring(build_domain_xml(_spec()))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "web01"
    assert root.findtext("vcpu") == "4"
    assert root.find("memory").get("unit") == "MiB"
    assert root.findtext("memory") == "2048"
    os_el = root.find("os")
    assert os_el.get("firmware") is None
    assert os_el.find("type").get("machine") == "q35"
    disks = root.findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]
    assert [d.find("driver").get("type") for d in disks] == ["raw", "qcow2"]
    assert disks[1].find("source").get("file") == "/t/web01/disk1.qcow2"
    nics = root.findall("devices/interface")
    assert nics[0].get("type") == "network"
    assert nics[0].find("source").get("network") == "lan"
    assert nics[0].find("mac").get("address") == "00:50:56:aa:bb:cc"
    assert nics[1].get("type") == "bridge"
    assert nics[1].find("source").get("bridge") == "br0"
    assert {n.find("model").get("type") for n in nics} == {"virtio"}
    assert root.find("features/smm") is None


def test_efi_secure_boot() -> None:
    root = ET.fromstring(build_domain_xml(_spec(firmware="efi", secure_boot=True)))
    os_el = root.find("os")
    assert os_el.get("firmware") == "efi"
    feats = {f.get("name"): f.get("enabled") for f in os_el.findall("firmware/feature")}
    assert feats == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert os_el.find("loader").get("secure") == "yes"
    assert root.find("features/smm").get("state") == "on"


def test_efi_without_secure_boot() -> None:
    root = ET.fromstring(build_domain_xml(_spec(firmware="efi")))
    feats = {f.get("name"): f.get("enabled") for f in root.findall("os/firmware/feature")}
    assert feats["secure-boot"] == "no"
    assert root.find("os/loader") is None


def test_ide_and_scsi_buses() -> None:
    spec = _spec(disks=(TargetDisk("/a", bus="ide"), TargetDisk("/b", bus="scsi"), TargetDisk("/c", bus="sata")))
    root = ET.fromstring(build_domain_xml(spec))
    assert [d.find("target").get("dev") for d in root.findall("devices/disk")] == ["hda", "sda", "sdb"]
    assert root.find("os/type").get("machine") == "pc"
    assert root.find("devices/controller").get("model") == "virtio-scsi"


def test_dev_names_past_z() -> None:
    assert _dev_name("vd", 0) == "vda"
    assert _dev_name("vd", 25) == "vdz"
    assert _dev_name("vd", 26) == "vdaa"


def test_special_characters_are_escaped() -> None:
    spec = _spec(name="a&b <c>", description='owner: "ops" & <dba>', disks=(TargetDisk("/t/x'&<.raw"),))
    text = build_domain_xml(spec)
    root = ET.fromstring(text)
    assert root.findtext("name") == "a&b <c>"
    assert root.findtext("description") == 'owner: "ops" & <dba>'
    assert root.find("devices/disk/source").get("file") == "/t/x'&<.raw"


def test_link_state_round_trip() -> None:
    xml = build_domain_xml(_spec())
    assert link_is_up(xml)
    down = set_link_state(xml, False)
    assert not link_is_up(down)
    assert all('state="down"' in i for i in interfaces_xml(down))
    assert link_is_up(set_link_state(down, True))
    assert not link_is_up(build_domain_xml(_spec(), link_up=False))
    assert not link_is_up(build_domain_xml(_spec(nics=())))
    # no <link> element means up (libvirt's default)
    assert link_is_up("<domain><devices><interface type='network'/></devices></domain>")
    assert 'state="down"' in set_link_state("<domain><devices><interface type='network'/></devices></domain>", False)


def test_malformed_xml_is_a_platform_error() -> None:
    with pytest.raises(TargetPlatformError, match="web01: domain XML is not well-formed"):
        link_is_up("<domain>", vm="web01")


def test_a_logged_serial_console_validates_against_libvirts_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess
    from pathlib import Path

    xml = build_domain_xml(_spec(), domain_type="qemu", console_log="/t/web01/console & log")
    root = ET.fromstring(xml)
    log = root.find("devices/serial/log")
    assert log is not None and (log.get("file"), log.get("append")) == ("/t/web01/console & log", "off")
    assert root.find("devices/console/log") is None  # the console is the same port: logged once
    assert ET.fromstring(build_domain_xml(_spec())).find("devices/serial/log") is None
    rng = Path("/usr/share/libvirt/schemas/domain.rng")
    if shutil.which("xmllint") is None or not rng.exists():
        pytest.skip("needs xmllint and libvirt's schemas")
    path = tmp_path / "d.xml"
    path.write_text(xml)
    run = subprocess.run(["xmllint", "--noout", "--relaxng", str(rng), str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
