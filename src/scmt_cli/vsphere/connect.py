"""Open the right :class:`~scmt_cli.vsphere.api.VCenter` for connection settings.

The ``open_vcenter`` extension point answers first (:mod:`scmt_cli.extensions`):
the embedded lab serves its fake vCenter there for the demo, the tour and the
tests.  Everything else goes to the pyvmomi adapter, imported only then, so
commands that never talk to vSphere do not pay for pyvmomi.
"""

from __future__ import annotations

from scmt_cli import extensions
from scmt_cli.events import Reporter
from scmt_cli.vsphere.api import VCenter
from scmt_cli.vsphere.settings import ConnectionSettings


def open_vcenter(settings: ConnectionSettings, reporter: Reporter | None = None, *, connect: bool = True) -> VCenter:
    """A VCenter for ``settings``; connected (TLS verified, logged in) unless ``connect=False``."""
    vc: VCenter | None = extensions.first("open_vcenter", settings, reporter)
    if vc is None:
        from scmt_cli.vsphere.adapter import PyVmomiVCenter

        vc = PyVmomiVCenter(settings, reporter)
    if connect:
        vc.connect()
    return vc
