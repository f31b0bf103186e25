"""The vSphere side of scmt: the only package that imports pyvmomi.

* :mod:`.api` - the :class:`~.api.VCenter` port services use, CBT helpers.
* :mod:`.adapter` - pyvmomi implementation (real vCenter, govmomi's vcsim).
* :mod:`.settings`, :mod:`.tls` - connection settings (plan, CLI, govc variables) and TLS.
* :mod:`.folder` - datastore ``/folder`` reads over HTTP Range (httpx).
* :mod:`.vddk` - disk reads through ``nbdkit vddk``.
* :mod:`.connect` - pick the implementation for connection settings.

The fake vCenter that the demo and the tests use lives in :mod:`scmt_cli.lab`.
"""
