"""Inventory inputs: RVTools exports (xlsx, CSV) and the lab file, by file type.

:func:`load_inventory` picks the reader from the path: ``.xlsx``/``.xlsm`` and
``.csv`` files (or a directory of RVTools CSV files) are RVTools exports;
``.yaml``/``.yml`` files are the embedded lab's file, read by the
``read_inventory`` extension point (:mod:`scmt_cli.extensions`).  Every reader
returns the normalized :class:`~scmt_cli.domain.inventory.Inventory`;
unreadable input raises :class:`~scmt_cli.errors.InputError` (exit 3).
"""

from __future__ import annotations

from pathlib import Path

from scmt_cli import extensions
from scmt_cli.domain.inventory import Inventory
from scmt_cli.errors import InputError, MissingFileError


def load_inventory(path: str | Path) -> Inventory:
    """Read the inventory at ``path``, choosing the reader by file type (see module doc)."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{p}: no such inventory file or directory",
                               hint="give an RVTools export (.xlsx, .csv or a folder of CSVs) or a lab .yaml")
    suffix = p.suffix.lower()
    if p.is_dir() or suffix in (".xlsx", ".xlsm", ".csv", ".tsv", ".txt"):
        from scmt_cli.inventory.rvtools import load_rvtools

        return load_rvtools(p)
    if suffix in (".yaml", ".yml"):
        found: Inventory | None = extensions.first("read_inventory", p)
        if found is not None:
            return found
        raise InputError(f"{p}: lab files are read by the embedded lab, which this installation lacks")
    if suffix == ".xls":
        raise InputError(f"{p}: legacy .xls workbooks are not read; save the RVTools export as .xlsx or CSV")
    raise InputError(f"{p}: unknown inventory type (expected an RVTools .xlsx/.csv export or a lab .yaml file)")


__all__ = ["load_inventory"]
