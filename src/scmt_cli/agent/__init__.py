"""The scmt agent (methods ``agent`` and ``hot-backup``): serves a source machine's disks read-only.

* :mod:`.protocol` - the framed wire protocol (pure encode/decode);
* :mod:`.wire` - reading frames from a socket;
* :mod:`.disks` - the served disks (``O_RDONLY``, SEEK_DATA/SEEK_HOLE, chunk digests);
* :mod:`.server` / :mod:`.service` - ``scmt agent serve``;
* :mod:`.client` / :mod:`.transport` - the ``agent://`` BlockSource on the migration host;
* :mod:`.incremental` - copies that send only chunks whose agent-side digest changed.
"""
