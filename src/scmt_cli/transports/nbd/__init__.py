"""NBD transport: our own client for ``nbd://host[:port]/export`` and ``nbd+unix:///export?socket=PATH``.

Importing this package registers both schemes with the transport registry
(which imports it only when an NBD URL is opened: see
``transports.base.BUILTIN_SCHEMES``).  Modules: ``protocol`` (constants, pure
parsers), ``url``, ``handshake``, ``connection`` (one socket, requests in
flight), ``client`` (:class:`NbdDisk`).
"""

from __future__ import annotations

from scmt_cli.transports import base
from scmt_cli.transports.nbd.client import NbdDisk, open_nbd_source, open_nbd_target
from scmt_cli.transports.nbd.url import NbdAddress, parse_nbd_url

__all__ = ["NbdAddress", "NbdDisk", "open_nbd_source", "open_nbd_target", "parse_nbd_url"]

for _name in ("nbd", "nbd+unix"):
    base.register(
        base.Scheme(
            name=_name,
            open_source=open_nbd_source,
            open_target=open_nbd_target,
            help="NBD export (nbdkit, qemu-nbd): nbd://host[:port]/export or nbd+unix:///export?socket=PATH",
        )
    )
