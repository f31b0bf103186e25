"""How the product reaches the lab without importing it.

The product never imports :mod:`scmt_cli.lab` (only the demo does): it finds
these functions through the ``scmt_cli.hooks`` entry points declared in
``pyproject.toml`` (see :mod:`scmt_cli.extensions`).  Each answers ``None``
for what is not the lab's, so the product falls through to its own code.
"""

from __future__ import annotations

import os
from pathlib import Path

from scmt_cli.domain.inventory import Inventory
from scmt_cli.events import Reporter
from scmt_cli.vsphere.api import VCenter
from scmt_cli.vsphere.settings import ConnectionSettings

#: Environment variable naming a fake vCenter's RPC URL (tests and the tour only).
FAKE_RPC_ENV = "SCMT_FAKE_VCENTER_RPC"


def open_vcenter(settings: ConnectionSettings, reporter: Reporter | None) -> VCenter | None:
    """A fake vCenter for ``settings``, or None when the settings name no lab.

    A fake estate started in this process (tests, ``scmt demo``) is found by its
    host and port; otherwise, when ``SCMT_FAKE_VCENTER_RPC`` names the RPC URL of
    a fake vCenter running in another process, every connection goes there.
    """
    from scmt_cli.lab.vcenter import FakeVCenter, estate_for

    estate = estate_for(settings.host, settings.port)
    if estate is not None:
        return FakeVCenter(estate, settings, reporter)
    rpc = os.environ.get(FAKE_RPC_ENV)
    if rpc:
        from scmt_cli.lab.remote import RemoteFakeVCenter

        return RemoteFakeVCenter(rpc, settings, reporter)
    return None


def read_inventory(path: Path) -> Inventory | None:
    """The inventory of a lab file (``.yaml``/``.yml``), or None for any other file."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return None
    from scmt_cli.lab.inventory import lab_inventory

    return lab_inventory(path)
