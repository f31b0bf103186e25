"""Build the lab guest's disk image offline from Debian packages (no libguestfs, no loop devices).

Steps (``GUEST.md`` measured them on this kind of machine):

1. ``mmdebstrap --variant=minbase`` with the kernel, GRUB, initramfs-tools and
   systemd into a directory; dpkg path-excludes keep docs, locales and unused
   module trees out; a customize hook writes the VMware-like module list and
   rebuilds the initramfs.
2. The guest's own files: fstab, hostname, the ready unit, the data directory,
   ``/boot/grub/grub.cfg``.
3. ``sfdisk`` writes an MBR partition table into the disk file,
   ``mkfs.ext4 -d ROOTDIR -E offset=...`` builds the root file system in place.
4. GRUB: ``boot.img``'s first 440 bytes into the MBR, a ``grub-mkimage -O
   i386-pc`` core image into the gap after it (sectors 1..2047).

Every tool runs under ``nice -n 10``.  Missing tools raise
:class:`~scmt_cli.errors.ConfigError` (exit 5) naming the Debian package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import scmt_cli.lab.guest.recipe as recipe
from scmt_cli.errors import ConfigError, TargetPlatformError

TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "sfdisk": "fdisk",
    "grub-mkimage": "grub-common",
}
BOOT_IMG = Path("/usr/lib/grub/i386-pc/boot.img")


def missing_tools() -> list[str]:
    """``tool (package)`` for every build tool that is not installed."""
    out = [f"{t} (apt-get install {p})" for t, p in TOOLS.items() if shutil.which(t) is None]
    if not BOOT_IMG.is_file():
        out.append(f"{BOOT_IMG} (apt-get install grub-pc-bin)")
    return out


def _run(argv: list[str], log: Path, *, timeout: float) -> None:
    with open(log, "ab") as f:
        f.write(("$ " + " ".join(argv) + "\n").encode())
        f.flush()
        try:
            proc = subprocess.run(["nice", "-n", "10", *argv], stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TargetPlatformError(f"guest build: {argv[0]} took more than {timeout:.0f} s (log: {log})") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise TargetPlatformError(
            f"guest build: {argv[0]} failed (exit {proc.returncode}; log: {log}): {' | '.join(tail)}")


def _mmdebstrap(rootdir: Path, log: Path) -> None:
    modules = "\\n".join(recipe.INITRAMFS_MODULES)
    argv = [
        "mmdebstrap", "--variant=minbase", f"--include={','.join(recipe.PACKAGES)}",
        "--aptopt=APT::Install-Recommends \"false\"",
        *(f"--dpkgopt=path-exclude={p}" for p in recipe.PATH_EXCLUDES),
        '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" && '
        'printf "MODULES=list\\nCOMPRESS=gzip\\n" > "$1/etc/initramfs-tools/conf.d/scmt"',
        f'--customize-hook=printf "{modules}\\n" >> "$1/etc/initramfs-tools/modules"',
        '--customize-hook=chroot "$1" update-initramfs -u -k all',
        '--customize-hook=rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists" "$1/var/log/"*',
        recipe.SUITE, str(rootdir),
    ]  # fmt: skip
    _run(argv, log, timeout=1800)


def _dress(rootdir: Path) -> None:
    """The guest's own files (written on the host, before the file system is made)."""
    (rootdir / "etc/fstab").write_text(recipe.fstab())
    (rootdir / "etc/hostname").write_text(recipe.HOSTNAME + "\n")
    script = rootdir / "usr/local/sbin/scmt-ready"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(recipe.READY_SCRIPT)
    script.chmod(0o755)
    unit = rootdir / "etc/systemd/system/scmt-ready.service"
    unit.write_text(recipe.READY_UNIT)
    wants = rootdir / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "scmt-ready.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/scmt-ready.service")
    data = rootdir / recipe.DATA_DIR.lstrip("/")
    data.mkdir(parents=True, exist_ok=True)
    (data / recipe.SEED_FILE).write_bytes(recipe.seed_content())
    kernels = sorted(p.name for p in (rootdir / "boot").glob("vmlinuz-*"))
    initrds = sorted(p.name for p in (rootdir / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise TargetPlatformError(f"guest build: no kernel or initrd in {rootdir / 'boot'}")
    grub = rootdir / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    (grub / "grub.cfg").write_text(recipe.grub_cfg(kernels[-1], initrds[-1]))
    # A machine id is made at first boot; an empty file keeps systemd from treating it as a first boot.
    (rootdir / "etc/machine-id").write_text("")


def _disk(rootdir: Path, disk: Path, work: Path, log: Path) -> None:
    size = recipe.DISK_SIZE
    with open(disk, "wb") as f:
        f.truncate(size)
    start = recipe.PART_OFFSET // 512
    table = f"label: dos\nunit: sectors\n\nstart={start}, type=83, bootable\n"
    with open(log, "ab") as f:
        proc = subprocess.run(
            ["sfdisk", "--no-reread", "--no-tell-kernel", str(disk)],
            input=table.encode(), stdout=f, stderr=subprocess.STDOUT, timeout=60,
        )  # fmt: skip
    if proc.returncode != 0:
        raise TargetPlatformError(f"guest build: sfdisk failed (log: {log})")
    fs_size_kib = (size - recipe.PART_OFFSET) // 1024
    _run(
        ["mkfs.ext4", "-q", "-F", "-U", recipe.FS_UUID, "-L", "root", "-d", str(rootdir),
         "-E", f"offset={recipe.PART_OFFSET}", str(disk), f"{fs_size_kib}k"],
        log, timeout=600,
    )  # fmt: skip
    core = work / "core.img"
    _run(
        ["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos1)/boot/grub", *recipe.GRUB_MODULES],
        log, timeout=120,
    )  # fmt: skip
    core_bytes = core.read_bytes()
    if len(core_bytes) > recipe.PART_OFFSET - 512:
        raise TargetPlatformError(
            f"guest build: GRUB core image is {len(core_bytes)} bytes, more than the gap before 1 MiB")
    boot = BOOT_IMG.read_bytes()
    with open(disk, "r+b") as f:
        f.seek(0)
        f.write(boot[:440])  # keep the disk signature and the partition table
        f.seek(512)
        f.write(core_bytes)


def build_image(dest: Path, *, progress: Callable[[str], None] = lambda _m: None) -> dict[str, float]:
    """Build the guest into ``dest`` (a sparse raw file); return step timings in seconds.

    Writes ``dest`` atomically (a temporary file renamed at the end); the build
    log lands beside it as ``build.log``.
    """
    missing = missing_tools()
    if missing:
        raise ConfigError("cannot build the lab guest: missing " + ", ".join(missing))
    dest.parent.mkdir(parents=True, exist_ok=True)
    log = dest.parent / "build.log"
    log.write_text("")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="scmt-guest-", dir=dest.parent) as tmp:
        work = Path(tmp)
        rootdir = work / "root"
        t0 = time.monotonic()
        progress("mmdebstrap: installing the guest's packages (about a minute)")
        _mmdebstrap(rootdir, log)
        times["packages_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        _dress(rootdir)
        progress("making the disk: partition table, ext4, GRUB")
        part = work / "disk.raw"
        _disk(rootdir, part, work, log)
        times["disk_s"] = time.monotonic() - t1
        os.replace(part, dest)
    times["total_s"] = time.monotonic() - t0
    return times
