"""Version information and the external tools scmt can use."""

from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from scmt_cli import __version__

OPTIONAL_TOOLS = ("nbdkit", "qemu-img", "qemu-nbd", "virt-v2v-in-place", "virsh")


@dataclass
class VersionInfo:
    version: str
    python: str
    platform: str
    tools: dict[str, str | None] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "python": self.python, "platform": self.platform, "tools": self.tools,
                "warnings": []}


def collect() -> VersionInfo:
    tools = {name: shutil.which(name) for name in OPTIONAL_TOOLS}
    return VersionInfo(
        version=__version__,
        python=".".join(map(str, sys.version_info[:3])),
        platform=platform.platform(terse=True),
        tools=tools,
    )
