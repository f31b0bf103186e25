"""The vSphere side of scmt: the only package that imports pyvmomi.

* :mod:`.api` - the :class:`~.api.VCenter` port services use, CBT helpers.
* :mod:`.adapter` - pyvmomi implementation (real vCenter, govmomi's vcsim).
* :mod:`.fake`, :mod:`.fakeestate`, :mod:`.fakedisk`, :mod:`.fakehttp` - the fake vCenter
  built from a lab file; :mod:`.fakeremote` - the same across a process boundary.
* :mod:`.lab` - the lab file format (``examples/lab.yaml``) and its inventory.
* :mod:`.settings`, :mod:`.tls` - connection settings (plan, CLI, govc variables) and TLS.
* :mod:`.folder` - datastore ``/folder`` reads over HTTP Range (httpx).
* :mod:`.workload` - a simulated guest writing to a fake VM's disks.
* :mod:`.connect` - pick the implementation for connection settings.
"""
