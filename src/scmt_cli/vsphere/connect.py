"""Open the right :class:`~scmt_cli.vsphere.api.VCenter` for connection settings.

In this order:

1. a fake estate started in this process (tests, ``scmt demo``), found by its
   host and port, is served by :class:`~scmt_cli.vsphere.fake.FakeVCenter`;
2. when ``SCMT_FAKE_VCENTER_RPC`` names the RPC URL of a fake vCenter running
   in another process (``python -m scmt_cli.vsphere.fake`` prints it), that
   fake is used through :class:`~scmt_cli.vsphere.fakeremote.RemoteFakeVCenter`
   (subprocess tests and the README tour);
3. everything else goes to the pyvmomi adapter (imported only then, so
   commands that never talk to vSphere do not pay for pyvmomi).
"""

from __future__ import annotations

import os

from scmt_cli.events import Reporter
from scmt_cli.vsphere.api import VCenter
from scmt_cli.vsphere.settings import ConnectionSettings

#: Environment variable naming a fake vCenter's RPC URL (tests and the tour only).
FAKE_RPC_ENV = "SCMT_FAKE_VCENTER_RPC"


def open_vcenter(settings: ConnectionSettings, reporter: Reporter | None = None, *, connect: bool = True) -> VCenter:
    """A VCenter for ``settings``; connected (TLS verified, logged in) unless ``connect=False``."""
    from scmt_cli.vsphere.fake import FakeVCenter, estate_for

    estate = estate_for(settings.host, settings.port)
    vc: VCenter
    rpc = os.environ.get(FAKE_RPC_ENV)
    if estate is not None:
        vc = FakeVCenter(estate, settings, reporter)
    elif rpc:
        from scmt_cli.vsphere.fakeremote import RemoteFakeVCenter

        vc = RemoteFakeVCenter(rpc, settings, reporter)
    else:
        from scmt_cli.vsphere.adapter import PyVmomiVCenter

        vc = PyVmomiVCenter(settings, reporter)
    if connect:
        vc.connect()
    return vc
