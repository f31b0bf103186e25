"""The platform contract: spec validation, MACs, the factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.errors import PlanError
from scmt_cli.targets import open_platform
from scmt_cli.targets.base import PlatformSpec, TargetNic, TargetVmSpec, generate_mac, normalize_mac
from scmt_cli.targets.dir import DirPlatform


def test_generate_mac_is_stable_local_and_distinct() -> None:
    a = generate_mac("web01", 0)
    assert a == generate_mac("web01", 0)
    assert a.startswith("52:54:00:")
    assert a != generate_mac("web01", 1)
    assert a != generate_mac("web02", 0)
    assert generate_mac("web01", 0, salt="planA") != generate_mac("web01", 0, salt="planB")


@pytest.mark.parametrize("mac", ["00:50:56:aa:bb:cc", "00-50-56-AA-BB-CC", " 00:50:56:aa:bb:cc "])
def test_normalize_mac_accepts(mac: str) -> None:
    assert normalize_mac(mac) == "00:50:56:aa:bb:cc"


@pytest.mark.parametrize("mac", ["00:50:56:aa:bb", "zz:50:56:aa:bb:cc", "01:00:5e:00:00:01", ""])
def test_normalize_mac_rejects(mac: str) -> None:
    with pytest.raises(PlanError, match="MAC address"):
        normalize_mac(mac, vm="web01")


def test_validated_keeps_planned_mac_and_regenerates_missing() -> None:
    spec = TargetVmSpec("web01", 2, 1024, nics=(TargetNic("lan", "00:50:56:AA:BB:CC"), TargetNic("dmz"))).validated()
    assert spec.nics[0].mac == "00:50:56:aa:bb:cc"
    assert spec.nics[1].mac == generate_mac("web01", 1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"name": "a/b"}, "cannot name a target VM"),
        ({"name": ".."}, "cannot name a target VM"),
        ({"name": ""}, "cannot name a target VM"),
        ({"cpus": 0}, "cpus must be at least 1"),
        ({"memory_mib": 1}, "memory_mib"),
        ({"firmware": "coreboot"}, "firmware"),
        ({"secure_boot": True}, "secure boot needs firmware 'efi'"),
        ({"nics": (TargetNic("lan", "00:50:56:aa:bb:cc"), TargetNic("lan2", "00:50:56:AA:BB:CC"))}, "share one MAC"),
        ({"nics": (TargetNic(""),)}, "network is empty"),
        ({"nics": (TargetNic("lan", model="vmxnet3"),)}, "model 'vmxnet3'"),  # type: ignore[arg-type]
    ],
)
def test_validated_rejects(kw: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"name": "web01", "cpus": 2, "memory_mib": 1024}
    base.update(kw)
    with pytest.raises(PlanError, match=match):
        TargetVmSpec(**base).validated()  # type: ignore[arg-type]


def test_platform_spec_from_mapping() -> None:
    spec = PlatformSpec.from_mapping({"type": "dir", "path": "/x", "disk_format": "qcow2", "note": 1})
    assert spec.disk_format == "qcow2"
    assert spec.extra == {"note": 1}
    with pytest.raises(PlanError, match="target.type 'hyperv'"):
        PlatformSpec.from_mapping({"type": "hyperv"}, where="plan.yaml")
    with pytest.raises(PlanError, match="disk_format 'vmdk'"):
        PlatformSpec.from_mapping({"disk_format": "vmdk"})
    with pytest.raises(PlanError, match="v2v_timeout_s"):
        PlatformSpec.from_mapping({"v2v_timeout_s": -1})
    with pytest.raises(PlanError, match="target.path must be a string"):
        PlatformSpec.from_mapping({"path": 3})


def test_open_platform_dir(tmp_path: Path) -> None:
    p = open_platform({"type": "dir", "path": str(tmp_path)})
    assert isinstance(p, DirPlatform)
    assert p.describe() == f"dir:{tmp_path}"


def test_open_platform_requires_fields() -> None:
    with pytest.raises(PlanError, match="target.path is required"):
        open_platform({"type": "dir"})
    with pytest.raises(PlanError, match="target.uri is required"):
        open_platform({"type": "libvirt", "path": "/tmp/x"})
