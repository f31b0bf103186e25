"""NBD transport: our own client for ``nbd://host[:port]/export`` and ``nbd+unix:///export?socket=PATH``.

Importing this package registers both schemes with the transport registry.
Modules: ``protocol`` (constants, pure parsers), ``url``, ``handshake``,
``connection`` (one socket, requests in flight), ``client`` (:class:`NbdDisk`).

The registry imports every built-in transport before it opens any URL, so
this package is imported by every ``scmt copy``; the client modules are
imported only when an NBD URL is actually opened (or a name below is used),
which keeps them out of the start-up of file-to-file copies (~4 ms measured).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scmt_cli.transports import base

if TYPE_CHECKING:
    from scmt_cli.transports.nbd.client import NbdDisk, open_nbd_source, open_nbd_target
    from scmt_cli.transports.nbd.url import NbdAddress, parse_nbd_url

__all__ = ["NbdAddress", "NbdDisk", "open_nbd_source", "open_nbd_target", "parse_nbd_url"]

_LAZY = {
    "NbdDisk": "scmt_cli.transports.nbd.client",
    "open_nbd_source": "scmt_cli.transports.nbd.client",
    "open_nbd_target": "scmt_cli.transports.nbd.client",
    "NbdAddress": "scmt_cli.transports.nbd.url",
    "parse_nbd_url": "scmt_cli.transports.nbd.url",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _open_source(url: str, **options: Any) -> Any:
    from scmt_cli.transports.nbd.client import open_nbd_source

    return open_nbd_source(url, **options)


def _open_target(url: str, size: int | None = None, **options: Any) -> Any:
    from scmt_cli.transports.nbd.client import open_nbd_target

    return open_nbd_target(url, size=size, **options)


for _name in ("nbd", "nbd+unix"):
    base.register(
        base.Scheme(
            name=_name,
            open_source=_open_source,
            open_target=_open_target,
            help="NBD export (nbdkit, qemu-nbd): nbd://host[:port]/export or nbd+unix:///export?socket=PATH",
        )
    )
