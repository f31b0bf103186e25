"""The VDDK path: nbdkit command line, availability checks, and the nbdkit process lifecycle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scmt_cli.errors import ConfigError, SourceOperationError
from scmt_cli.vsphere.settings import ConnectionSettings
from scmt_cli.vsphere.vddk import ManagedNbdkit, NbdkitDiskSource, VddkDisk, check_vddk_available, nbdkit_vddk_argv

SECRET = "vddk-Secret-9921"  # noqa: S105 - the value the test hunts for


def test_argv_has_everything_but_the_password() -> None:
    disk = VddkDisk("/opt/vddk", "vm-42", "snapshot-7", "[ds1] web/web-000001.vmdk", transports="nbdssl")
    settings = ConnectionSettings(host="vc.example", user="svc@vsphere.local", password=SECRET)
    argv = nbdkit_vddk_argv(disk, settings, "AA:BB", "/run/x/nbd.sock", "/run/x/password")
    assert argv[:6] == ["nbdkit", "--readonly", "--exit-with-parent", "--foreground", "--unix", "/run/x/nbd.sock"]
    assert "vm=moref=vm-42" in argv and "snapshot=snapshot-7" in argv and "file=[ds1] web/web-000001.vmdk" in argv
    assert "password=+/run/x/password" in argv and "thumbprint=AA:BB" in argv and "transports=nbdssl" in argv
    assert SECRET not in " ".join(argv)


@pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")
def test_missing_vddk_plugin_or_libdir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vddk plugin is not installed|not a VDDK library directory"):
        check_vddk_available(str(tmp_path))


@pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")
def test_managed_nbdkit_serves_reads_and_cleans_up(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"abc" * 1000 + bytes(5192))
    seen: dict[str, str] = {}

    def argv(sock: str, pw: str) -> list[str]:
        seen["pw"] = Path(pw).read_text()
        seen["dir"] = str(Path(sock).parent)
        return ["nbdkit", "--readonly", "--exit-with-parent", "--foreground", "--unix", sock, "file", str(disk)]

    server = ManagedNbdkit(argv, what="test", secret=SECRET)
    assert seen["pw"] == SECRET and not (Path(seen["dir"]) / "password").exists()  # read, then removed
    src = NbdkitDiskSource(server, "vm/disk")
    assert src.size == 8192 and src.read(0, 6) == b"abcabc" and src.describe() == "vddk:vm/disk"
    src.close()
    assert server.proc.poll() is not None and not Path(seen["dir"]).exists()


@pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")
def test_nbdkit_that_fails_to_start_is_reported() -> None:
    with pytest.raises(SourceOperationError, match="vm/disk: nbdkit exited"):
        ManagedNbdkit(lambda sock, pw: ["nbdkit", "--foreground", "--unix", sock, "no-such-plugin-xyz"],
                      what="vm/disk")  # fmt: skip
