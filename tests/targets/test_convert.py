"""Guest conversion: argv, skip under --direct, a clear warning when the tool is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.errors import TargetPlatformError
from scmt_cli.events import RecordingReporter
from scmt_cli.targets.base import PlatformSpec
from scmt_cli.targets.dir import DirPlatform

from .conftest import TWO_DISKS, spec_for


def _prepared(tmp_path: Path, reporter: RecordingReporter, **kw: object) -> tuple[DirPlatform, object]:
    p = DirPlatform(tmp_path / "t", spec=PlatformSpec(type="dir", path=str(tmp_path / "t"), **kw), reporter=reporter)  # type: ignore[arg-type]
    disks = p.prepare_disks("web01", TWO_DISKS)
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
    with pytest.raises(TargetPlatformError, match=r"web01: guest conversion: virt-v2v-in-place failed \(exit 1\)"):
        p.convert(spec)  # type: ignore[arg-type]


def test_hanging_converter_times_out(
    tmp_path: Path, reporter: RecordingReporter, fake_v2v: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_V2V_SLEEP", "30")
    p, spec = _prepared(tmp_path, reporter, v2v_timeout_s=0.5)
    with pytest.raises(TargetPlatformError, match="did not finish within 0.5 s"):
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
