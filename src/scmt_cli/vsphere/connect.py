"""Open the right :class:`~scmt_cli.vsphere.api.VCenter` for connection settings.

A fake estate started in this process (tests, ``scmt demo``) is found by its
host and port and served by :class:`~scmt_cli.vsphere.fake.FakeVCenter`;
everything else goes to the pyvmomi adapter (imported only then, so commands
that never talk to vSphere do not pay for pyvmomi).
"""

from __future__ import annotations

from scmt_cli.events import Reporter
from scmt_cli.vsphere.api import VCenter
from scmt_cli.vsphere.settings import ConnectionSettings


def open_vcenter(settings: ConnectionSettings, reporter: Reporter | None = None, *, connect: bool = True) -> VCenter:
    """A VCenter for ``settings``; connected (TLS verified, logged in) unless ``connect=False``."""
    from scmt_cli.vsphere.fake import FakeVCenter, estate_for

    estate = estate_for(settings.host, settings.port)
    vc: VCenter
    if estate is not None:
        vc = FakeVCenter(estate, settings, reporter)
    else:
        from scmt_cli.vsphere.adapter import PyVmomiVCenter

        vc = PyVmomiVCenter(settings, reporter)
    if connect:
        vc.connect()
    return vc
