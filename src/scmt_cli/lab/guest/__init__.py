"""A real, bootable lab guest (Debian, ext4, GRUB) for proving that a migrated VM runs.

* :func:`ensure_image` builds it once (offline, from Debian packages) and caches it.
* :mod:`.fs` reads and writes files inside the image's file system with ``debugfs``.
* :mod:`.recipe` is what the guest is made of and what it prints on its console.
"""

from scmt_cli.lab.guest.cache import GuestImage, cache_root, cached_image, copy_sparse, ensure_image
from scmt_cli.lab.guest.recipe import DATA_DIR, PART_OFFSET, READY_PREFIX, data_digest

__all__ = [
    "DATA_DIR", "PART_OFFSET", "READY_PREFIX", "GuestImage", "cache_root", "cached_image", "copy_sparse",
    "data_digest", "ensure_image",
]  # fmt: skip
