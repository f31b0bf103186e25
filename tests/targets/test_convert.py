"""Guest conversion: argv, skips (direct, no tool, no OS), failures, overlays, locks, outcome parsing."""

from __future__ import annotations

import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from scmt_cli.errors import ConversionError, LockedError
from scmt_cli.events import RecordingReporter
from scmt_cli.targets import convert
from scmt_cli.targets.base import PlatformSpec
from scmt_cli.targets.dir import DirPlatform
from scmt_cli.targets.disklock import DiskLock
from tests.conversion.fakev2v import MBR

from .conftest import TWO_DISKS, spec_for


def _prepared(tmp_path: Path, reporter: RecordingReporter, **kw: object) -> tuple[DirPlatform, object]:
    p = DirPlatform(tmp_path / "t", spec=PlatformSpec(type="dir", path=str(tmp_path / "t"), **kw), reporter=reporter)  # type: ignore[arg-type]
    disks = p.prepare_disks("web01", TWO_DISKS)
    with open(disks[0].path, "r+b") as fh:  # an MBR: the disk holds an operating system
        fh.write(bytes(MBR))
    return p, spec_for("web01", disks)


def test_runs_virt_v2v_in_place_with_an_argv(tmp_path: Path, reporter: RecordingReporter, fake_v2v: Path) -> None:
    p, spec = _prepared(tmp_path, reporter)
    res = p.convert(spec)  # type: ignore[arg-type]
    assert res.ran
    assert res.argv[0].endswith("/virt-v2v-in-place")
    assert list(res.argv[1:3]) == ["-i", "libvirtxml"]
    assert fake_v2v.read_text().splitlines()[:2] == ["-i", "libvirtxml"]
    assert "converting guest" in res.output
    assert not (tmp_path / "t" / "web01" / "convert.xml").exists()  # temporary XML removed
    kinds = [e["kind"] for e in reporter.of_type("event")]
    assert "guest_conversion_done" in kinds


def test_direct_skips_conversion(tmp_path: Path, reporter: RecordingReporter, fake_v2v: Path) -> None:
    p, spec = _prepared(tmp_path, reporter)
    res = p.convert(spec, direct=True)  # type: ignore[arg-type]
    assert not res.ran
    assert "direct" in (res.skipped_reason or "")
    assert not fake_v2v.exists()


def test_missing_converter_is_a_warning(tmp_path: Path, reporter: RecordingReporter) -> None:
    p, spec = _prepared(tmp_path, reporter, v2v_command="scmt-no-such-converter")
    res = p.convert(spec)  # type: ignore[arg-type]
    assert not res.ran
    assert res.warnings
    assert "scmt-no-such-converter is not installed" in res.warnings[0]
    assert reporter.of_type("log")[0]["level"] == "warning"
    assert res.to_dict()["ran"] is False


def test_failing_converter_raises(
    tmp_path: Path, reporter: RecordingReporter, fake_v2v: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_V2V_FAIL", "1")
    p, spec = _prepared(tmp_path, reporter)
    with pytest.raises(ConversionError, match=r"web01: guest conversion: virt-v2v-in-place exit 1; last output: "
                       r".*inspection could not detect") as exc:
        p.convert(spec)  # type: ignore[arg-type]
    assert exc.value.exit_code == 52 and exc.value.details["why"] == "exit"


def test_hanging_converter_times_out(
    tmp_path: Path, reporter: RecordingReporter, fake_v2v: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_V2V_SLEEP", "30")
    p, spec = _prepared(tmp_path, reporter, v2v_timeout_s=0.5)
    with pytest.raises(ConversionError, match="timed out after 0.5 s"):
        p.convert(spec)  # type: ignore[arg-type]


def test_static_ips_of_the_plan_go_to_virt_v2v(tmp_path: Path, reporter: RecordingReporter, fake_v2v: Path) -> None:
    from dataclasses import replace

    p, spec = _prepared(tmp_path, reporter)
    nic = spec.nics[0]  # type: ignore[attr-defined]
    with_ip = replace(nic, ip="10.20.0.11/24", gateway="10.20.0.1", dns=("10.20.0.2", "10.20.0.3"))
    spec = replace(spec, nics=(with_ip, *spec.nics[1:]))  # type: ignore[attr-defined]
    res = p.convert(spec)  # type: ignore[arg-type]
    args = fake_v2v.read_text().splitlines()
    i = args.index("--mac")
    assert args[i + 1] == f"{nic.mac.lower()}:ip:10.20.0.11,10.20.0.1,24,10.20.0.2,10.20.0.3"
    assert res.ran and "--mac" in res.argv


def test_a_missing_converter_says_static_ips_were_not_set(tmp_path: Path, reporter: RecordingReporter,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    p, spec = _prepared(tmp_path, reporter)
    spec = replace(spec, nics=(replace(spec.nics[0], ip="10.0.0.5/24"),))  # type: ignore[attr-defined]
    res = p.convert(spec)  # type: ignore[arg-type]
    assert not res.ran
    assert any("static IP" in w for w in res.warnings)


# -- what the step adds: no-OS skip, overlays, locks, outcome, environment -------------------------------
needs_qemu_io = pytest.mark.skipif(shutil.which("qemu-io") is None or shutil.which("qemu-img") is None,
                                   reason="needs qemu-utils (qemu-io, qemu-img)")


def test_disks_without_an_operating_system_are_not_converted(tmp_path: Path, reporter: RecordingReporter,
                                                             fake_v2v: Path) -> None:
    p = DirPlatform(tmp_path / "t", reporter=reporter)
    disks = p.prepare_disks("web01", TWO_DISKS)
    for d in disks:  # random bytes, as the lab's disks hold
        with open(d.path, "r+b") as fh:
            fh.write(random.Random(d.index).randbytes(256 * 1024))
    res = p.convert(spec_for("web01", disks))
    assert not res.ran and not fake_v2v.exists()
    assert "no disk holds a partition table, boot sector or known file system" in (res.skipped_reason or "")
    assert not res.warnings


def test_boot_signatures() -> None:
    gpt = bytearray(8192)
    gpt[512:520] = b"EFI PART"
    ext = bytearray(2048)
    ext[1080:1082] = b"\x53\xef"
    assert convert.boot_signature(bytes(gpt)) == "GPT partition table"
    assert convert.boot_signature(bytes(MBR)) == "MBR partition table"
    assert convert.boot_signature(bytes(ext)) == "ext2/3/4 file system"
    assert convert.boot_signature(bytes(131072)) is None
    assert all(convert.boot_signature(random.Random(seed).randbytes(131072)) is None for seed in range(300))


def _writing_v2v(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, fail: bool) -> None:
    """A converter that writes 0xab over the first 4 KiB of the disk its XML names (then fails if asked)."""
    bindir = tmp_path / "wbin"
    bindir.mkdir()
    script = bindir / "virt-v2v-in-place"
    script.write_text(
        "#!/bin/sh\n"
        "disk=$(grep -o 'source file=.[^\"]*' \"$3\" | head -1 | cut -c14-)\n"
        "echo \"[   1.0] writing $disk\"\n"
        "qemu-io -f qcow2 -c 'write -P 0xab 0 4096' \"$disk\" >/dev/null || exit 9\n"
        + ("echo 'virt-v2v-in-place: error: boom' >&2; exit 1\n" if fail else "echo '[   2.0] Finishing off'\n"))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


@needs_qemu_io
def test_a_failed_conversion_leaves_the_disks_as_they_were(tmp_path: Path, reporter: RecordingReporter,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _writing_v2v(tmp_path, monkeypatch, fail=True)
    p, spec = _prepared(tmp_path, reporter)
    before = Path(spec.disks[0].path).read_bytes()  # type: ignore[attr-defined]
    with pytest.raises(ConversionError, match="boom"):
        p.convert(spec)  # type: ignore[arg-type]
    assert Path(spec.disks[0].path).read_bytes() == before  # type: ignore[attr-defined]
    assert not list((tmp_path / "t" / "web01").glob(".v2v-*"))


@needs_qemu_io
def test_a_successful_conversion_is_committed_into_the_disks(tmp_path: Path, reporter: RecordingReporter,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _writing_v2v(tmp_path, monkeypatch, fail=False)
    p, spec = _prepared(tmp_path, reporter)
    res = p.convert(spec)  # type: ignore[arg-type]
    assert res.ran and res.steps[-1] == "Finishing off"
    with open(spec.disks[0].path, "rb") as fh:  # type: ignore[attr-defined]
        assert fh.read(4096) == b"\xab" * 4096
    assert not list((tmp_path / "t" / "web01").glob(".v2v-*"))
    assert not (tmp_path / "t" / "web01" / convert.COMMIT_MARKER).exists()


def test_an_interrupted_commit_is_finished_without_converting_again(tmp_path: Path, reporter: RecordingReporter,
                                                                    fake_v2v: Path) -> None:
    p, spec = _prepared(tmp_path, reporter)
    folder = tmp_path / "t" / "web01"
    (folder / convert.COMMIT_MARKER).write_text('{"overlays": []}')
    res = p.convert(spec)  # type: ignore[arg-type]
    assert res.ran and not fake_v2v.exists()
    assert not (folder / convert.COMMIT_MARKER).exists()


def test_a_locked_disk_refuses_a_second_converter(tmp_path: Path, reporter: RecordingReporter,
                                                  fake_v2v: Path) -> None:
    p, spec = _prepared(tmp_path, reporter)
    with DiskLock(spec.disks[1].path, what="scmt sync of web01"):  # type: ignore[attr-defined]
        with pytest.raises(LockedError, match=r"disk1.raw is being written by scmt sync of web01 \(pid "):
            p.convert(spec)  # type: ignore[arg-type]
    assert not fake_v2v.exists()
    assert p.convert(spec).ran  # type: ignore[arg-type]


def test_the_outcome_is_read_from_the_converter_output() -> None:
    lines = ["[   0.0] Setting up the source: -i libvirtxml convert.xml", "[   1.0] Opening the source",
             "[  12.2] Inspecting the source", "[  31.0] Checking for sufficient free disk space in the guest",
             "[  31.0] Converting Debian GNU/Linux 12 (bookworm) to run on KVM",
             "virt-v2v-in-place: warning: could not determine a way to update the configuration of Grub2",
             "virt-v2v-in-place: The QEMU Guest Agent will be installed for this guest at first boot.",
             "virt-v2v-in-place: This guest has virtio drivers installed.", "[ 123.4] Finishing off"]
    out = convert.parse_outcome(lines)
    assert out["changes"] == ["The QEMU Guest Agent will be installed for this guest at first boot.",
                              "virtio drivers available in the guest (block, network)"]
    assert out["guest"] == "Debian GNU/Linux 12 (bookworm)"
    assert out["virtio_drivers"] is True
    assert out["warnings"] == ["could not determine a way to update the configuration of Grub2"]
    assert out["steps"][0].startswith("Setting up the source") and out["steps"][-1] == "Finishing off"


def test_the_converter_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIBGUESTFS_BACKEND_SETTINGS", raising=False)
    monkeypatch.setenv("SCMT_V2V_ACCEL", "tcg")
    env = convert.converter_env("kvm", tmp_path / "cache")
    assert env["LIBGUESTFS_BACKEND"] == "direct" and env["LIBGUESTFS_BACKEND_SETTINGS"] == "force_tcg"
    assert env["LIBGUESTFS_CACHEDIR"] == str(tmp_path / "cache")
    monkeypatch.setenv("SCMT_V2V_ACCEL", "kvm")
    assert "LIBGUESTFS_BACKEND_SETTINGS" not in convert.converter_env("tcg", None)
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", "force_kvm")
    monkeypatch.setenv("SCMT_V2V_ACCEL", "tcg")
    assert convert.converter_env("auto", None)["LIBGUESTFS_BACKEND_SETTINGS"] == "force_kvm"  # the user's wins
    monkeypatch.delenv("SCMT_V2V_ACCEL")
    cpu_has_vmx = "vmx" in Path("/proc/cpuinfo").read_text() or "svm" in Path("/proc/cpuinfo").read_text()
    assert convert.effective_accel("auto") == ("kvm" if cpu_has_vmx else "tcg")
