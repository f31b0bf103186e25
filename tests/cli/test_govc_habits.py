"""govc users' habits (issues 13 §1 and 16 §6), without a vCenter."""

from __future__ import annotations

import json

from scmt_cli.cli.main import main
from scmt_cli.vsphere.settings import resolve_settings


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_url_option_refuses_a_value_that_is_an_option(capsys):
    code, out, err = run(capsys, "--json", "assess", "--vcenter", "--no-network")
    assert code == 2
    assert "--no-network" in json.loads(out)["message"]
    assert "resolve" not in err


def test_bare_assess_without_govc_url_names_govc_url(capsys, monkeypatch):
    for var in ("GOVC_URL", "GOVC_USERNAME", "GOVC_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    code, out, _ = run(capsys, "--json", "assess")
    assert code == 2
    assert "GOVC_URL" in json.loads(out)["hint"]


def test_govc_datacenter_reaches_the_settings():
    env = {"GOVC_URL": "https://u:p@vc.example/sdk", "GOVC_DATACENTER": "DC1"}
    assert resolve_settings(env=env).datacenter == "DC1"
    assert resolve_settings(env=env, source={"datacenter": "DC2"}).datacenter == "DC2"
    assert resolve_settings(env={"GOVC_URL": "https://u:p@vc.example/sdk"}).datacenter is None


def test_datacenter_filter_keeps_only_that_datacenters_vms():
    from scmt_cli.domain.inventory import VM, Inventory, in_datacenter

    inv = Inventory(vms=(VM("a", folder="/DC0/vm"), VM("b", folder="/DC1/vm/app"), VM("c", folder="/F/DC1/vm"),
                         VM("d")))
    assert [v.name for v in in_datacenter(inv, "DC1").vms] == ["b", "c", "d"]
    assert [v.name for v in in_datacenter(inv, "/F/DC1").vms] == ["c", "d"]


def test_a_missing_plan_is_the_same_code_and_hint_for_every_command(capsys, tmp_path):
    missing = str(tmp_path / "nosuch.yaml")
    for argv in (["status", missing], ["sync", missing], ["failover", missing], ["rollback", missing],
                 ["finalize", missing], ["migrate", missing], ["assess", missing], ["plan", "show", missing],
                 ["plan", "estimate", missing], ["plan", "validate", missing]):
        code, out, _ = run(capsys, "--json", *argv)
        doc = json.loads(out)
        assert (code, doc["error"]) == (2, "missing_file"), argv
        assert "scmt plan init" in doc["hint"], argv


def test_a_missing_lab_or_inventory_is_the_same_code(capsys, tmp_path):
    for argv in (["assess", "--lab", str(tmp_path / "x.yaml")], ["assess", "-i", str(tmp_path / "x.xlsx")]):
        code, out, _ = run(capsys, "--json", *argv)
        assert (code, json.loads(out)["error"]) == (2, "missing_file"), argv
