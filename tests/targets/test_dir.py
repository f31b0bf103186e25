"""The dir platform: folders, sparse disks, domain.xml, an atomic state record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from scmt_cli.errors import SizeMismatchError, TargetPlatformError
from scmt_cli.events import RecordingReporter
from scmt_cli.targets import open_platform
from scmt_cli.targets.base import DiskRequest, PlatformSpec
from scmt_cli.targets.dir import DirPlatform

from .conftest import TWO_DISKS, spec_for


def _platform(root: Path, reporter: RecordingReporter, fmt: str = "raw") -> DirPlatform:
    p = open_platform(PlatformSpec(type="dir", path=str(root), disk_format=fmt), reporter=reporter)  # type: ignore[arg-type]
    assert isinstance(p, DirPlatform)
    return p


def test_prepare_disks_creates_sparse_files_with_file_urls(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path / "t", reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    assert [d.index for d in disks] == [0, 1]
    for d, req in zip(disks, TWO_DISKS, strict=True):
        path = Path(d.copy_path)
        assert path == tmp_path / "t" / "web01" / f"disk{req.index}.raw"
        assert d.path == d.copy_path
        assert d.copy_url.startswith("file:///")
        assert Path(unquote(urlsplit(d.copy_url).path)) == path
        st = path.stat()
        assert st.st_size == req.size_bytes
        assert st.st_blocks * 512 < req.size_bytes  # sparse
    manifest = json.loads((tmp_path / "t" / "web01" / "disks.json").read_text())
    assert [m["size_bytes"] for m in manifest["disks"]] == [1 << 20, 3 << 20]
    assert len(reporter.of_type("event")) == 2


def test_prepare_disks_is_idempotent_and_never_truncates(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    d0 = p.prepare_disks("web01", TWO_DISKS)[0]
    with open(d0.copy_path, "r+b") as fh:
        fh.seek(4096)
        fh.write(b"copied data")
    again = p.prepare_disks("web01", TWO_DISKS)
    assert again[0] == d0
    with open(d0.copy_path, "rb") as fh:
        fh.seek(4096)
        assert fh.read(11) == b"copied data"
    # the source disk grew: the copy grows, data kept
    grown = p.prepare_disks("web01", [DiskRequest(0, 2 << 20)])[0]
    assert Path(grown.copy_path).stat().st_size == 2 << 20
    # the source shrank: refuse
    with pytest.raises(SizeMismatchError, match="larger than the source disk"):
        p.prepare_disks("web01", [DiskRequest(0, 1 << 20)])


def test_url_of_a_name_with_spaces_is_quoted(tmp_path: Path, reporter: RecordingReporter) -> None:
    d = _platform(tmp_path, reporter).prepare_disks("db 01 #1", [DiskRequest(0, 4096)])[0]
    assert " " not in d.copy_url
    assert "#" not in d.copy_url
    assert Path(unquote(urlsplit(d.copy_url).path)) == Path(d.copy_path)


def test_bad_vm_name_is_refused(tmp_path: Path, reporter: RecordingReporter) -> None:
    from scmt_cli.errors import PlanError

    with pytest.raises(PlanError, match="cannot name a target VM"):
        _platform(tmp_path, reporter).prepare_disks("../escape", [DiskRequest(0, 4096)])


def test_lifecycle_and_state_record(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    assert p.state("web01").defined is False
    disks = p.prepare_disks("web01", TWO_DISKS)
    st = p.define(spec_for("web01", disks))
    assert (st.defined, st.power, st.network_connected) == (True, "shutoff", True)
    root = ET.parse(tmp_path / "web01" / "domain.xml").getroot()
    assert root.findtext("name") == "web01"
    assert len(root.findall("devices/disk")) == 2

    assert p.start("web01").power == "running"
    assert p.start("web01").power == "running"  # idempotent
    record = json.loads((tmp_path / "web01" / "state.json").read_text())
    assert record["power"] == "running"
    assert [h["action"] for h in record["history"]] == ["define", "start"]

    st = p.set_network("web01", False)
    assert st.network_connected is False
    assert p.set_network("web01", False).network_connected is False
    links = {e.get("state") for e in ET.parse(tmp_path / "web01" / "domain.xml").getroot().iter("link")}
    assert links == {"down"}
    assert p.set_network("web01", True).network_connected is True

    assert p.stop("web01", graceful=True, timeout=1).power == "shutoff"
    assert p.stop("web01").power == "shutoff"
    record = json.loads((tmp_path / "web01" / "state.json").read_text())
    assert [h["action"] for h in record["history"]] == [
        "define", "start", "disconnect-network", "connect-network", "shutdown",
    ]  # fmt: skip
    assert not list((tmp_path / "web01").glob(".*.tmp"))  # no leftovers of atomic writes


def test_redefine_keeps_power_and_isolation(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    p.define(spec_for("web01", disks))
    p.start("web01")
    p.set_network("web01", False)
    st = p.define(spec_for("web01", disks, cpus=8))
    assert (st.power, st.network_connected) == ("running", False)
    root = ET.parse(tmp_path / "web01" / "domain.xml").getroot()
    assert root.findtext("vcpu") == "8"
    assert {e.get("state") for e in root.iter("link")} == {"down"}


def test_actions_on_undefined_vm_fail_with_vm_and_step(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    with pytest.raises(TargetPlatformError, match="ghost: start: the VM is not defined"):
        p.start("ghost")
    with pytest.raises(TargetPlatformError, match="ghost: disconnect network"):
        p.set_network("ghost", False)
    assert p.destroy("ghost").defined is False


def test_define_requires_existing_disks(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    os.unlink(disks[1].copy_path)
    with pytest.raises(TargetPlatformError, match=r"web01: define: disks\[1\]"):
        p.define(spec_for("web01", disks))


def test_destroy_undefines_and_keeps_or_removes_disks(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    p.define(spec_for("web01", disks))
    p.start("web01")
    st = p.destroy("web01")
    assert st.defined is False
    assert p.state("web01").defined is False
    assert not (tmp_path / "web01" / "domain.xml").exists()
    assert Path(disks[0].copy_path).exists()
    p.destroy("web01", remove_disks=True)
    assert not (tmp_path / "web01").exists()


def test_corrupt_state_record_is_a_clear_error(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    (tmp_path / "web01").mkdir()
    (tmp_path / "web01" / "state.json").write_text("{not json")
    with pytest.raises(TargetPlatformError, match="state.json is not valid JSON"):
        p.state("web01")
    (tmp_path / "web01" / "state.json").write_text(json.dumps({"format": 99, "power": "on"}))
    with pytest.raises(TargetPlatformError, match="not a state record this scmt understands"):
        p.state("web01")


def test_vm_without_nics(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    st = p.define(spec_for("web01", disks, nics=()))
    assert st.network_connected is False
    assert p.set_network("web01", True).network_connected is False


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_qcow2_copy_goes_to_raw_then_converts(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter, fmt="qcow2")
    disks = p.prepare_disks("web01", [DiskRequest(0, 2 << 20)])
    d = disks[0]
    assert d.copy_path.endswith("disk0.raw")
    assert d.path.endswith("disk0.qcow2")
    payload = os.urandom(8192)
    with open(d.copy_path, "r+b") as fh:
        fh.seek(1 << 20)
        fh.write(payload)
    p.finalize_disks("web01")
    assert not Path(d.copy_path).exists()
    info = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", d.path]))
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 2 << 20
    back = tmp_path / "back.raw"
    subprocess.check_call(["qemu-img", "convert", "-O", "raw", d.path, str(back)])
    with open(back, "rb") as fh:
        fh.seek(1 << 20)
        assert fh.read(8192) == payload
    p.finalize_disks("web01")  # idempotent
    st = p.define(spec_for("web01", disks))
    assert st.defined
    root = ET.parse(tmp_path / "web01" / "domain.xml").getroot()
    assert root.find("devices/disk/driver").get("type") == "qcow2"


def test_finalize_missing_qemu_img_is_config_error(
    tmp_path: Path, reporter: RecordingReporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scmt_cli.errors import ConfigError

    p = _platform(tmp_path, reporter, fmt="qcow2")
    p.prepare_disks("web01", [DiskRequest(0, 4096)])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="qemu-img is needed"):
        p.finalize_disks("web01")


def test_finalize_raw_is_a_noop(tmp_path: Path, reporter: RecordingReporter) -> None:
    p = _platform(tmp_path, reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    assert p.finalize_disks("web01") == disks
    assert Path(disks[0].copy_path).exists()


RNG = Path("/usr/share/libvirt/schemas/domain.rng")


@pytest.mark.skipif(shutil.which("xmllint") is None or not RNG.exists(), reason="needs xmllint and libvirt's schemas")
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"firmware": "efi", "secure_boot": True},
        {"firmware": "efi", "name": "db & <co>", "description": 'owner "ops" & <dba>'},
    ],
)
def test_domain_xml_validates_against_libvirts_schema(
    tmp_path: Path, reporter: RecordingReporter, kw: dict[str, object]
) -> None:
    """The same RelaxNG schema ``virsh define --validate`` uses."""
    p = _platform(tmp_path, reporter)
    kw = dict(kw)
    name = str(kw.pop("name", "web01"))
    disks = p.prepare_disks(name, TWO_DISKS)
    p.define(spec_for(name, disks, **kw))
    xml = tmp_path / name / "domain.xml"
    run = subprocess.run(["xmllint", "--noout", "--relaxng", str(RNG), str(xml)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_read_only_target_is_exit_33_at_sync_too(tmp_path, monkeypatch):
    import errno as _errno

    from scmt_cli.errors import ReadOnlyTargetError
    from scmt_cli.events import NullReporter
    from scmt_cli.targets import storage

    def refuse(self, *a, **k):
        raise OSError(_errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage.Path, "mkdir", refuse)
    with pytest.raises(ReadOnlyTargetError) as info:
        storage.prepare_disks(tmp_path / "t", "web01", [], "raw", NullReporter())
    assert info.value.exit_code == 33 and "read-only" in info.value.message
