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
    Without it, a loopback URL that answers as the fake vCenter is a ConfigError
    saying what to export (pyvmomi would only say "not a VIM server").
    """
    from scmt_cli.lab.vcenter import FakeVCenter, estate_for

    estate = estate_for(settings.host, settings.port)
    if estate is not None:
        return FakeVCenter(estate, settings, reporter)
    rpc = os.environ.get(FAKE_RPC_ENV)
    if rpc:
        from scmt_cli.lab.remote import RemoteFakeVCenter

        return RemoteFakeVCenter(rpc, settings, reporter)
    if settings.host in ("127.0.0.1", "localhost", "::1") and _is_fake(settings.base_url):
        from scmt_cli.errors import ConfigError

        raise ConfigError(
            f"{settings.url} is scmt's fake vCenter (a lab), which scmt reaches only through its RPC: "
            f"{FAKE_RPC_ENV} is not set",
            hint=f"export {FAKE_RPC_ENV}={settings.base_url}/sdk/rpc, or start the lab with "
                 "eval \"$(python -m scmt_cli.lab --lab LAB --port PORT --print-env)\"")
    return None


def _is_fake(base_url: str) -> bool:
    """Whether ``base_url`` answers ``GET /sdk`` as the fake vCenter (a loopback probe: no credentials sent)."""
    import json

    import httpx

    try:
        res = httpx.get(base_url + "/sdk", verify=False, timeout=2.0)  # noqa: S501 - identifies, sends nothing
        return res.status_code == 200 and json.loads(res.text).get("scmt_fake_vcenter") is True
    except Exception:  # noqa: BLE001 - anything else is not the lab: the product's adapter takes over
        return False


def read_inventory(path: Path) -> Inventory | None:
    """The inventory of a lab file (``.yaml``/``.yml``), or None for any other file."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return None
    from scmt_cli.lab.inventory import lab_inventory

    return lab_inventory(path)
