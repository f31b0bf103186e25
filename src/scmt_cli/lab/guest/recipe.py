"""What the lab guest is made of: every input that changes the built image.

The guest is a trimmed Debian (bookworm) with a real package database, kernel,
initramfs and GRUB configuration, because virt-v2v refuses anything less (see
``GUEST.md``).  Its initramfs is "VMware-like": it only carries the drivers a
VMware VM boots from (``MODULES=list``), so the guest does NOT find its root on
virtio-blk before conversion and does after ``virt-v2v-in-place`` added the
virtio drivers.  At the end of its boot a systemd unit prints::

    SCMT-GUEST-READY <digest>

on ``ttyS0`` and powers the guest off.  ``<digest>`` is :func:`data_digest`
of the files in :data:`DATA_DIR` (computed in the guest with ``sha256sum``).

:func:`recipe_key` hashes everything here: the cache keeps one image per key.
"""

from __future__ import annotations

import hashlib
import json

SUITE = "bookworm"
READY_PREFIX = "SCMT-GUEST-READY"
DATA_DIR = "/scmt-data"  # flat directory; file names are [A-Za-z0-9._-]+
SEED_FILE = "seed.dat"
DISK_SIZE = 1024 * 1024 * 1024  # sparse; about 340 MB of it allocated (build.json records each build)
PART_OFFSET = 1024 * 1024  # the root partition starts at 1 MiB (sector 2048)
FS_UUID = "5c3e6b1e-2f0a-4d7e-9b57-3c1a0f00d5c1"
HOSTNAME = "scmt-guest"

PACKAGES = ("linux-image-amd64", "grub-pc", "initramfs-tools", "systemd-sysv", "udev", "e2fsprogs")

# dpkg never unpacks these: documentation, translations and kernel module trees
# that no VM of the lab uses (the disk, SCSI, virtio and VMware drivers stay).
_MODULE_TREES = (
    "drivers/gpu", "drivers/net/wireless", "drivers/net/ethernet", "drivers/media", "drivers/usb",
    "drivers/infiniband", "drivers/bluetooth", "drivers/staging", "drivers/iio", "drivers/isdn",
    "drivers/hid", "drivers/input/joystick", "drivers/input/touchscreen", "drivers/net/can", "drivers/mtd",
    "drivers/nfc", "drivers/video", "drivers/platform", "drivers/thunderbolt", "drivers/hwmon",
    "drivers/leds", "drivers/power", "drivers/mmc", "drivers/pcmcia", "drivers/watchdog", "drivers/misc",
    "drivers/net/usb", "drivers/net/wwan", "drivers/net/hamradio", "drivers/atm", "drivers/crypto",
    "drivers/firewire", "drivers/edac", "sound", "net/wireless", "net/mac80211", "net/bluetooth",
    "net/netfilter", "net/ipv4/netfilter", "net/ipv6/netfilter", "fs/ocfs2", "fs/gfs2", "fs/btrfs",
    "fs/xfs", "fs/nfs", "fs/nfsd", "fs/cifs", "fs/smb", "fs/ceph", "fs/f2fs", "fs/ntfs3", "fs/ubifs",
    "fs/jfs", "fs/reiserfs", "fs/nilfs2", "drivers/md", "drivers/target", "drivers/scsi/qla2xxx",
    "drivers/scsi/lpfc", "drivers/scsi/bfa", "drivers/scsi/be2iscsi", "drivers/scsi/mpt3sas",
    "drivers/scsi/megaraid", "drivers/scsi/aacraid", "drivers/scsi/qedf", "drivers/scsi/qedi",
)  # fmt: skip
PATH_EXCLUDES = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/share/zoneinfo/*", "/usr/share/i18n/*",
    *(f"{root}/modules/*/kernel/{tree}/*" for root in ("/lib", "/usr/lib") for tree in _MODULE_TREES),
)  # fmt: skip

# The initramfs of a VM that ran on VMware: IDE/SATA/LSI/PVSCSI disks, no virtio.
INITRAMFS_MODULES = ("ata_piix", "ata_generic", "ahci", "sd_mod", "mptspi", "vmw_pvscsi", "sym53c8xx", "ext4")

GRUB_MODULES = (
    "biosdisk", "part_msdos", "ext2", "normal", "configfile", "linux", "echo", "test", "search",
    "search_fs_uuid", "serial", "terminal", "sleep",
)  # fmt: skip

# The initramfs waits up to 30 s for its root device; panic=5 then ends a failed
# boot (QEMU runs with -no-reboot, so it exits) instead of sitting in the
# initramfs shell.  (rootdelay= would be a fixed sleep in Debian's initramfs.)
KERNEL_ARGS = "ro console=ttyS0,115200n8 panic=5 systemd.show_status=1 net.ifnames=0"

READY_SCRIPT = f"""#!/bin/sh
# Print the digest of {DATA_DIR} on the serial console, then power off.
cd {DATA_DIR} || exit 1
digest=$(LC_ALL=C sha256sum -- * | sha256sum | cut -d' ' -f1)
count=$(ls -1 | wc -l)
echo "{READY_PREFIX} $digest files=$count" > /dev/ttyS0
"""

READY_UNIT = """[Unit]
Description=scmt lab guest: report the data digest and power off
After=local-fs.target
DefaultDependencies=yes

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/scmt-ready
ExecStartPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""


def grub_cfg(kernel: str, initrd: str) -> str:
    """The hand-written GRUB menu (``/boot/grub/grub.cfg``): one entry, serial console."""
    return f"""serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry 'Debian GNU/Linux' {{
    search --no-floppy --fs-uuid --set=root {FS_UUID}
    linux /boot/{kernel} root=UUID={FS_UUID} {KERNEL_ARGS}
    initrd /boot/{initrd}
}}
"""


def fstab() -> str:
    return f"UUID={FS_UUID} / ext4 errors=remount-ro 0 1\n"


def data_digest(files: dict[str, bytes]) -> str:
    """The digest the guest prints: SHA-256 of ``sha256sum``'s lines for the files, sorted by name."""
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def seed_content() -> bytes:
    return b"scmt lab guest: seed data\n" * 64


def recipe_key() -> str:
    """A short hash of every input of the build; a new recipe gets a new cached image."""
    doc = {
        "v": 1, "suite": SUITE, "packages": PACKAGES, "excludes": PATH_EXCLUDES, "modules": INITRAMFS_MODULES,
        "grub": GRUB_MODULES, "args": KERNEL_ARGS, "script": READY_SCRIPT, "unit": READY_UNIT,
        "size": DISK_SIZE, "offset": PART_OFFSET, "uuid": FS_UUID, "seed": seed_content().decode(),
        "cfg": grub_cfg("K", "I"), "fstab": fstab(), "host": HOSTNAME,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
