"""Target platforms: where migrated VMs are created and run (``dir``, ``libvirt``).

See :mod:`scmt_cli.targets.base` for the contract and :func:`open_platform`.
"""

from scmt_cli.targets.base import (
    ConversionResult,
    DiskRequest,
    PlatformSpec,
    PreparedDisk,
    TargetDisk,
    TargetNic,
    TargetPlatform,
    TargetState,
    TargetVmSpec,
    generate_mac,
    open_platform,
)

__all__ = [
    "ConversionResult",
    "DiskRequest",
    "PlatformSpec",
    "PreparedDisk",
    "TargetDisk",
    "TargetNic",
    "TargetPlatform",
    "TargetState",
    "TargetVmSpec",
    "generate_mac",
    "open_platform",
]
