"""CI never passes by skipping the real-guest tests: SCMT_REQUIRE_GUEST=1 turns a missing tool into a failure,
.ci/run sets it, and .ci/run installs the package of every tool those tests call."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.guest import conftest

CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"

#: every external tool tests/guest (and the product code it drives) runs, and the Debian package that has it
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",  # scmt boot, test failover, libvirt's QEMU driver
    "qemu-img": "qemu-utils",  # conversion overlays and commits, qcow2 disks, the test's qemu-img stand-in
    "virt-v2v-in-place": "virt-v2v",  # the real guest conversion
    "supermin": "virt-v2v",  # libguestfs' appliance (a dependency of virt-v2v's libguestfs0)
    "/boot/vmlinuz-*": "linux-image-amd64",  # the kernel libguestfs builds its appliance from
    "mmdebstrap": "mmdebstrap",  # the lab guest image
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",  # files inside the guest's file system
    "sfdisk": "fdisk",
    "grub-mkimage": "grub-common",
    "/usr/lib/grub/i386-pc/boot.img": "grub-pc-bin",
    "libvirtd": "libvirt-daemon",  # the private libvirtd (its QEMU driver comes with it)
    "unshare": "util-linux",
    "mount": "mount",
    "ip": "iproute2",
    "xmllint": "libxml2-utils",  # domain XML against libvirt's schema
}


def _apt_packages() -> set[str]:
    text = CI_RUN.read_text()
    block = re.search(r"APT_PACKAGES=\((.*?)\n\)", text, re.S)
    assert block is not None, "APT_PACKAGES=( ... ) not found in .ci/run"
    return {line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()}


def test_ci_installs_every_tool_the_guest_tests_call() -> None:
    listed = _apt_packages()
    missing = {tool: pkg for tool, pkg in TOOLS.items() if pkg not in listed}
    assert not missing, f".ci/run does not install: {missing}"


def test_ci_requires_the_guest_tests() -> None:
    assert re.search(r"^export SCMT_REQUIRE_GUEST=1$", CI_RUN.read_text(), re.M)
    assert "'.[test,libvirt" in CI_RUN.read_text()  # libvirt-python for the private libvirtd


def test_a_missing_tool_skips_but_fails_under_scmt_require_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    assert shutil.which("no-such-tool-scmt") is None
    monkeypatch.delenv("SCMT_REQUIRE_GUEST", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs no-such-tool-scmt"):
        conftest.need("no-such-tool-scmt")
    monkeypatch.setenv("SCMT_REQUIRE_GUEST", "1")
    with pytest.raises(pytest.fail.Exception, match="SCMT_REQUIRE_GUEST=1 but needs no-such-tool-scmt"):
        conftest.need("no-such-tool-scmt")


def test_a_guest_that_cannot_be_built_fails_under_scmt_require_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "missing_tools", lambda: ["mmdebstrap (apt-get install mmdebstrap)"])
    monkeypatch.setenv("SCMT_REQUIRE_GUEST", "1")
    with pytest.raises(pytest.fail.Exception, match="cannot build the lab guest: missing mmdebstrap"):
        conftest.guest_image.__wrapped__()  # type: ignore[attr-defined]


def test_a_private_libvirtd_that_cannot_start_fails_under_scmt_require_guest(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(conftest.private_libvirtd, "missing", lambda: ["libvirtd"])
    monkeypatch.setenv("SCMT_REQUIRE_GUEST", "1")
    with pytest.raises(pytest.fail.Exception, match="a private libvirtd needs libvirtd"):
        next(conftest.libvirtd.__wrapped__(tmp_path))  # type: ignore[attr-defined]
