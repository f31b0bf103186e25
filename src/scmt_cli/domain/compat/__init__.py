"""Compatibility data (versioned YAML files under ``data/``) and its loaders.

* ``data/os.yaml`` - guest operating systems (the seed's table plus releases it
  predates, each row marked by ``source``) and how guest OS strings map to rows;
* ``data/vmware.yaml`` - ESXi/vSphere versions validated for agentless methods;
* ``data/storage.yaml`` - file systems and device formats;
* ``data/ports.yaml`` - ports each method needs;
* ``data/downtime.yaml`` - the seed's lab switch times per method and OS.
"""

from scmt_cli.domain.compat.osmatch import OsMatch, match_os
from scmt_cli.domain.compat.tables import (
    FAMILY_NAMES,
    METHODS,
    OsRow,
    PortRule,
    VersionRange,
    lab_switch_seconds,
    os_table,
    port_rules,
    storage_support,
    version_tuple,
    vmware_ranges,
)

__all__ = [
    "FAMILY_NAMES",
    "METHODS",
    "OsMatch",
    "OsRow",
    "PortRule",
    "VersionRange",
    "lab_switch_seconds",
    "match_os",
    "os_table",
    "port_rules",
    "storage_support",
    "version_tuple",
    "vmware_ranges",
]
