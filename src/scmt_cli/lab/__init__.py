"""The embedded lab: a fake vSphere estate for the demo, the tour and the tests.

Nothing here is needed to migrate from a real vCenter; the product reaches the
lab only through :mod:`.hooks` (entry points), and only the demo imports it.

* :mod:`.model`, :mod:`.parse`, :mod:`.yamlread` - the lab file format
  (``examples/lab.yaml``); :mod:`.inventory` - a lab's inventory for assessment.
* :mod:`.estate` - the estate: VMs, snapshots, CBT; :mod:`.disk` - its sparse
  disk files; :mod:`.server` - its HTTPS endpoint (login, ``/folder``, RPC).
* :mod:`.vcenter` - :class:`~.vcenter.FakeVCenter`, the
  :class:`~scmt_cli.vsphere.api.VCenter` port over an in-process estate;
  :mod:`.remote` - the same across a process boundary.
* :mod:`.workload` - a simulated guest writing to a fake VM's disks between syncs.
* :mod:`.demo` - the demo's lab and plan.
* ``python -m scmt_cli.lab --lab FILE`` serves a lab (:mod:`.__main__`).
"""
