"""The estimate reproduces the seed's "Migration network information" table."""

from __future__ import annotations

import json

import pytest

from scmt_cli.cli.main import main
from scmt_cli.domain.estimate import EstimateInput, estimate_vm, schedule, share_link
from scmt_cli.domain.units import parse_rate, parse_size

# name, effective data, ratio, bandwidth, increments, pre-switch, expected transfer/switch/downtime/total
SEED_ROWS = [
    ("OA", "500GiB", 0.6, "300Mbit", ("0.3GiB", "0.1GiB"), "0.02GiB", (164, 5, 5, 169)),
    ("web middleware", "200GiB", 0.7, "300Mbit", ("0.3GiB", "0.05GiB"), "0.01GiB", (77, 5, 5, 82)),
    ("database", "150GiB", 0.6, "300Mbit", ("0.5GiB", "0.1GiB"), "0.02GiB", (50, 5, 5, 55)),
    ("ERP", "1TiB", 0.7, "2000Mbit", ("2GiB", "0.5GiB"), "0.1GiB", (59, 5, 5, 64)),
]


@pytest.mark.parametrize("row", SEED_ROWS, ids=[r[0] for r in SEED_ROWS])
def test_seed_rows(row):
    name, data, ratio, bw, incs, pre, expected = row
    est = estimate_vm(EstimateInput(
        name, parse_size(data), ratio, parse_rate(bw), parse_rate(bw), 1.2, 300,
        tuple(parse_size(i) for i in incs), parse_size(pre),
    ))
    assert (est.transfer_minutes, est.switch_minutes, est.downtime_minutes, est.total_minutes) == expected


def test_compressed_column_of_the_table():
    # the table's "Compressed Data Volume" column: 300 / 140 / 90 / 717 GB
    got = [round(parse_size(d) * r / 1024**3) for _, d, r, *_ in SEED_ROWS]
    assert got == [300, 140, 90, 717]


def test_given_compressed_size_matches_too():
    est = estimate_vm(EstimateInput("ERP", 0, 1.0, parse_rate("2000Mbit"), compressed_bytes=717 * 1024**3))
    assert est.transfer_minutes == 59


def test_slower_side_limits_and_redundancy_scales():
    a = estimate_vm(EstimateInput("x", parse_size("500GiB"), 0.6, parse_rate("1Gbit"), parse_rate("300Mbit")))
    assert a.transfer_minutes == 164
    b = estimate_vm(EstimateInput("x", parse_size("500GiB"), 0.6, parse_rate("300Mbit"), redundancy=1.0))
    assert b.transfer_minutes == 137  # 136.53 rounded up


def test_big_pre_switch_delta_lengthens_downtime():
    est = estimate_vm(EstimateInput("x", parse_size("100GiB"), 1.0, parse_rate("300Mbit"),
                                    pre_switch_bytes=parse_size("10GiB")))
    assert est.downtime_minutes == 5 + 5  # 10 GiB at 300 Mbit = 5.46 min -> 10.46 -> 10
    assert est.total_minutes == est.transfer_minutes + est.downtime_minutes


def test_bad_inputs():
    with pytest.raises(ValueError, match="compression"):
        EstimateInput("x", 1, compression=1.5)
    with pytest.raises(ValueError, match="redundancy"):
        EstimateInput("x", 1, redundancy=0.5)


def test_share_link_two_at_a_time():
    assert share_link([10, 10, 10], 2) == [(0.0, 20.0), (0.0, 20.0), (20.0, 30.0)]
    assert share_link([10, 10], 1) == [(0.0, 10.0), (10.0, 20.0)]
    (s1, e1), (s2, e2) = share_link([4, 10], 2)
    assert (e1, e2) == (8.0, 14.0)  # half the link each until the short one is done


def test_schedule_waves_and_incremental_cycles():
    fast = estimate_vm(EstimateInput("a", parse_size("10GiB"), 1.0, parse_rate("300Mbit")))
    slow = estimate_vm(EstimateInput("b", parse_size("200GiB"), 1.0, parse_rate("300Mbit")))
    waves = schedule([("w1", [fast, slow]), ("w2", [fast])], concurrency=2, sync_interval_seconds=1800)
    w1, w2 = waves
    assert w2.start_minutes == pytest.approx(w1.end_minutes)
    a_slot = w1.slots[0]
    assert a_slot.incremental_cycles >= 2  # a waits for b, syncing every 30 minutes
    assert w1.switch_minutes == 5


def test_cli_what_if_json(capsys):
    rc = main(["plan", "estimate", "--json", "--data", "500GiB", "--compression", "0.6",
               "--bandwidth", "300Mbit", "--redundancy", "1.2", "--switch", "5m"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    vm = out["vms"][0]
    assert {k: vm[k] for k in ("transfer_minutes", "switch_minutes", "downtime_minutes", "total_minutes")} == {
        "transfer_minutes": 164, "switch_minutes": 5, "downtime_minutes": 5, "total_minutes": 169}
    assert vm["vm"] == "what-if"
    assert vm["inputs"]["compression"] == 0.6
    assert vm["inputs"]["effective_mbit_per_s"] == 300


@pytest.mark.parametrize(
    ("args", "minutes"),
    [
        (["--data", "200GiB", "--compression", "0.7", "--bandwidth", "300Mbit"], "77"),
        (["--data", "1TiB", "--compression", "0.7", "--bandwidth", "2Gbit", "--target-bandwidth", "2000Mbit"], "59"),
    ],
)
def test_cli_what_if_table(capsys, args, minutes):
    assert main(["plan", "estimate", *args]) == 0
    assert f" {minutes} " in capsys.readouterr().out


def test_cli_bad_size_is_usage_error(capsys):
    assert main(["plan", "estimate", "--data", "lots", "--bandwidth", "300Mbit"]) == 2
    assert "--data" in capsys.readouterr().err


def test_cli_needs_data_and_bandwidth(capsys):
    assert main(["plan", "estimate", "--data", "1GiB"]) == 2


def test_cli_increments_and_pre_switch(capsys):
    rc = main(["plan", "estimate", "--json", "--data", "500GiB", "--compression", "0.6", "--bandwidth", "300Mbit",
               "--increment", "0.3GiB", "--increment", "0.1GiB", "--pre-switch", "0.02GiB"])
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert rc == 0
    assert (vm["transfer_minutes"], vm["downtime_minutes"], vm["total_minutes"]) == (164, 5, 169)
    assert len(vm["increment_minutes_exact"]) == 2
    assert vm["increment_minutes_exact"][0] > vm["increment_minutes_exact"][1] > 0
    assert 0 < vm["pre_switch_minutes_exact"] < 0.1


def test_compare_measured_pace():
    from scmt_cli.domain.estimate import compare_measured

    est = estimate_vm(EstimateInput("OA", parse_size("500GiB"), 0.6, parse_rate("300Mbit")))
    # half the data in half the estimated time: on track
    half = compare_measured(est, parse_size("250GiB"), est.transfer_minutes_exact * 60 / 2)
    assert half.assessment == "on track" and half.ratio == pytest.approx(1.0)
    slow = compare_measured(est, parse_size("100GiB"), est.transfer_minutes_exact * 60)
    assert slow.assessment == "slower than estimated" and slow.ratio == pytest.approx(5.0)
    with pytest.raises(ValueError, match="need some bytes"):
        compare_measured(est, 0, 10)
