"""Garbage in never gives a traceback: an Inventory or an InputError, nothing else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scmt_cli.domain.assess import AssessContext, assess_vm
from scmt_cli.errors import InputError
from scmt_cli.inventory import load_inventory

HEADERS = ["VM", "Powerstate", "Memory", "CPUs", "Template", "OS according to the configuration file", "CBT", "Host"]
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
cell = st.one_of(text, st.integers(-5, 10**7).map(str), st.sampled_from(["True", "False", ""]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes_as_csv(tmp_path, data):
    p = tmp_path / "RVTools_tabvInfo.csv"
    p.write_bytes(data)
    try:
        inv = load_inventory(p)
    except InputError as exc:
        assert str(p) in exc.message  # noqa: PT017 - either outcome is fine, only its form matters
    else:
        for vm in inv.vms:
            assess_vm(vm, AssessContext(inventory=inv))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(cell, min_size=0, max_size=len(HEADERS) + 2), max_size=6),
       delim=st.sampled_from([",", ";", "\t"]))
def test_random_vinfo_rows(tmp_path, rows, delim):
    import csv

    p = tmp_path / "RVTools_tabvInfo.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delim)
        w.writerow(HEADERS)
        w.writerows(rows)
    inv = load_inventory(p)
    assert len(inv.vms) + len(inv.skipped) <= len(rows)
    for vm in inv.vms:
        a = assess_vm(vm, AssessContext(inventory=inv))
        assert a.verdict in ("ready", "warnings", "blocked", "incomplete")


def test_non_finite_numbers_are_row_errors_not_crashes():
    from scmt_cli.inventory.rvtools import to_int

    for bad in ["INF", "-inf", "nan", float("inf")]:
        try:
            to_int(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
