"""Read spreadsheet tabs from an RVTools export: one xlsx workbook or CSV files.

A :class:`Sheet` is a header row plus data rows, each row with its 1-based
row number in the file so problems can be located.  CSV files are decoded as
UTF-8 (with or without BOM) and, failing that, as Windows-1252 (what Excel
writes on western Windows); the delimiter (``,``, ``;`` or tab) is sniffed
from the header line.  Every unreadable file raises :class:`InputError`
naming the file.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.errors import InputError

_TAB_IN_NAME = re.compile(r"(?:^|_)tab(?P<tab>v[A-Za-z]+)$|^(?P<bare>v[A-Z][A-Za-z]+)$")


@dataclass
class Sheet:
    name: str
    file: str
    headers: list[str]
    rows: list[tuple[int, list[Any]]] = field(default_factory=list)


def read_xlsx(path: Path) -> dict[str, Sheet]:
    """Every tab of the workbook at ``path`` (values, not formulas)."""
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - openpyxl is a dependency
        raise InputError("reading RVTools xlsx exports needs openpyxl (pip install openpyxl)") from exc
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a readable xlsx workbook ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # openpyxl raises assorted errors on corrupt parts
        raise InputError(f"{path}: not a readable xlsx workbook ({type(exc).__name__})") from exc
    sheets: dict[str, Sheet] = {}
    try:
        for ws in wb.worksheets:
            it = ws.iter_rows(values_only=True)
            header_row = next(it, None)
            if header_row is None:
                sheets[ws.title] = Sheet(ws.title, str(path), [])
                continue
            headers = ["" if h is None else str(h).strip() for h in header_row]
            sheet = Sheet(ws.title, str(path), headers)
            for n, row in enumerate(it, start=2):
                values = list(row)
                if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                    continue
                sheet.rows.append((n, values))
            sheets[ws.title] = sheet
    except Exception as exc:
        raise InputError(f"{path}: cannot read the workbook ({type(exc).__name__}: {exc})") from exc
    finally:
        wb.close()
    return sheets


def decode(data: bytes, path: Path) -> str:
    """UTF-8 (BOM optional), else Windows-1252, else Latin-1 (which never fails)."""
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_csv(path: Path, tab: str | None = None) -> Sheet:
    """One CSV file as a sheet; ``tab`` defaults to the name in the file name (``RVTools_tabvInfo.csv``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if b"\x00" in data[:4096]:
        raise InputError(f"{path}: binary data, not a CSV file (an xlsx renamed to .csv?)")
    text = decode(data, path)
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    delim = max(counts, key=lambda d: counts[d])
    if counts[delim] == 0:
        delim = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    name = tab or tab_of(path) or "vInfo"
    if not rows:
        return Sheet(name, str(path), [])
    sheet = Sheet(name, str(path), [h.strip() for h in rows[0]])
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        sheet.rows.append((n, [c if c.strip() else None for c in row]))
    return sheet


def tab_of(path: Path) -> str | None:
    """``RVTools_tabvDisk.csv`` -> ``vDisk``; ``vInfo.csv`` -> ``vInfo``; else None."""
    m = _TAB_IN_NAME.search(path.stem)
    if not m:
        return None
    return m.group("tab") or m.group("bare")


def read_csv_set(path: Path) -> dict[str, Sheet]:
    """A directory of RVTools CSV files, or one CSV file plus its sibling tabs."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv")
        if not files:
            raise InputError(f"{path}: no .csv files in this directory")
    else:
        files = [path]
        if tab_of(path):
            prefix = path.stem[: path.stem.rfind("tab")]
            files += sorted(
                p for p in path.parent.glob(f"{prefix}tab*.csv") if p != path and tab_of(p) is not None
            )
    sheets: dict[str, Sheet] = {}
    for f in files:
        tab = tab_of(f)
        if tab is None and f != path:
            continue
        sheet = read_csv(f, tab)
        sheets.setdefault(sheet.name, sheet)
    return sheets
