"""``scmt plan ...`` in-process: exit codes, one line per problem, --json shapes."""

from __future__ import annotations

import json

import pytest

from tests.plan.conftest import REPO, base, dump, run_cli

EXAMPLES = sorted(str(p) for p in (REPO / "plans").glob("*.yaml"))


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(dump(base()))
    return path


@pytest.fixture
def warned(tmp_path):
    doc = base()
    doc["source"]["insecure"] = True
    path = tmp_path / "warned.yaml"
    path.write_text(dump(doc))
    return path


@pytest.fixture
def bad(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ntarget: {type: dir, path: /x}\nvms:\n  - name: a\n    cpus: many\n    memroy: 8GiB\n")
    return path


def test_example_plans_validate():
    assert len(EXAMPLES) >= 5
    code, out, err = run_cli("plan", "validate", *EXAMPLES)
    assert code == 0, out + err
    assert out.count(": valid") == len(EXAMPLES)


def test_example_plans_validate_against_the_lab_inventory():
    """Valid, and the lab VMs that assessment blocks for the plan's method are named with their rule ids."""
    lab = REPO / "examples" / "lab.yaml"
    if not lab.exists():
        pytest.skip("examples/lab.yaml not present")
    code, out, err = run_cli("plan", "validate", "--inventory", str(lab), *EXAMPLES)
    assert code == 1, out + err
    assert out.count(": valid") == len(EXAMPLES) and "not checked" not in out
    assert "redis-a is blocked for method agentless by disk.shared" in err
    assert "win2012-report01 is blocked for method managed by device.usb" in err


def test_valid_plan_exits_0(good):
    code, out, _ = run_cli("plan", "validate", str(good))
    assert code == 0
    assert f"{good}: valid (2 VMs; method agentless)" in out


def test_warnings_exit_1(warned):
    code, out, err = run_cli("plan", "validate", str(warned))
    assert code == 1
    assert "valid with warnings" in out and "insecure: true" in err  # warnings go to stderr, once


def test_invalid_plan_exits_2_with_one_line_per_problem(bad):
    code, out, err = run_cli("plan", "validate", str(bad))
    assert code == 2
    lines = err.splitlines()
    assert lines[0] == f"error: {bad} is not a valid plan (3 problems)"
    assert f"{bad}:5:11: vms[0].cpus: expected an integer, got 'many'" in lines
    assert f"{bad}:6:5: vms[0].memroy: unknown key 'memroy'; did you mean 'memory'?" in lines
    assert f"{bad}:2:9: target: type: dir needs 'path', the directory for disk images" not in lines
    assert "Traceback" not in out + err


def test_several_files_worst_verdict_wins(good, warned, bad):
    assert run_cli("plan", "validate", str(good), str(warned))[0] == 1
    code, out, err = run_cli("plan", "validate", str(good), str(bad), str(warned))
    assert code == 2
    assert "2 of 3" not in err and "1 of 3 plans are invalid" in err
    assert f"{good}: valid" in err  # verdicts of the good files still reach the user


def test_json_per_file_results_on_success(good, warned):
    code, out, _ = run_cli("--json", "plan", "validate", str(good), str(warned))
    assert code == 1
    data = json.loads(out)
    assert data["valid"] is True
    assert [f["file"] for f in data["files"]] == [str(good), str(warned)]
    assert [f["valid"] for f in data["files"]] == [True, True]
    assert data["files"][1]["warnings"][0]["path"] == "source.insecure"
    assert data["files"][1]["warnings"][0]["line"] > 0
    assert data["files"][0]["plan"] == {"name": "good", "vms": 2, "groups": 0, "methods": ["agentless"]}
    assert len(data["warnings"]) == 1


def test_json_per_file_results_on_failure(good, bad):
    code, out, _ = run_cli("plan", "validate", str(good), str(bad), "--json")
    assert code == 2
    data = json.loads(out)
    assert data["type"] == "exit_error" and data["code"] == 2 and data["error"] == "plan"
    files = {f["file"]: f for f in data["files"]}
    assert files[str(good)]["valid"] is True and files[str(bad)]["valid"] is False
    problem = files[str(bad)]["errors"][0]
    assert set(problem) == {"file", "line", "column", "path", "message"}
    assert len(data["problems"]) == 3


def test_log_json_error_line(bad):
    code, out, err = run_cli("--log-json", "plan", "validate", str(bad))
    assert code == 2
    records = [json.loads(line) for line in err.splitlines()]
    final = records[-1]
    assert final["type"] == "exit_error" and final["code"] == 2 and len(final["problems"]) == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the plan is empty"),
        ("- a\n- b\n", "expected a mapping"),
        ("version: [\n", "invalid YAML"),
        ("\x89PNG\r\n\x1a\n\x00\x00", "invalid YAML"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_unusable_files_exit_2(tmp_path, content, expected):
    path = tmp_path / "p.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, out, err = run_cli("plan", "validate", str(path))
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_missing_file_and_directory(tmp_path):
    code, _, err = run_cli("plan", "validate", str(tmp_path / "nope.yaml"), str(tmp_path))
    assert code == 2
    assert "no such plan file" in err and "is a directory" in err


def test_show_human_and_json(good):
    code, out, _ = run_cli("plan", "show", str(good))
    assert code == 0
    assert "web01" in out and "disconnect-network" in out and "not checked against the source" in out
    code, out, _ = run_cli("--json", "plan", "show", str(good))
    data = json.loads(out)
    assert data["plan"]["defaults"]["concurrency"] == 2
    assert data["plan"]["effective"][0]["source_action"] == "disconnect-network"
    assert data["warnings"] == [] and data["notes"]


def test_show_invalid_plan_exits_2(bad):
    code, _, err = run_cli("plan", "show", str(bad))
    assert code == 2 and "vms[0].cpus" in err


def test_schema_prints_the_schema():
    code, out, _ = run_cli("plan", "schema")
    assert code == 0
    assert json.loads(out)["$schema"].endswith("2020-12/schema")
    code, out, _ = run_cli("--json", "plan", "schema")
    assert json.loads(out)["title"].startswith("scmt migration plan")


@pytest.mark.parametrize("method", ["managed", "agentless", "agent", "hot-backup"])
def test_init_writes_a_plan_that_validates(tmp_path, method):
    path = tmp_path / f"{method}.yaml"
    code, out, _ = run_cli("plan", "init", str(path), "--method", method)
    assert code == 0 and "wrote" in out
    assert path.read_text().startswith("# scmt migration plan")
    assert run_cli("plan", "validate", str(path))[0] == 0


def test_init_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("keep me")
    code, _, err = run_cli("plan", "init", str(path))
    assert code == 2 and "already exists" in err and "--force" in err
    assert path.read_text() == "keep me"
    code, out, _ = run_cli("--json", "plan", "init", str(path), "--force", "--method", "agent")
    assert code == 0 and json.loads(out)["overwritten"] is True
    assert "method: agent" in path.read_text()


def test_init_rejects_unknown_method(tmp_path):
    code, _, err = run_cli("plan", "init", str(tmp_path / "p.yaml"), "--method", "hotbackup")
    assert code == 2 and "did you mean 'hot-backup'" in err
    assert not (tmp_path / "p.yaml").exists()


def test_validate_with_unreadable_inventory_exits_3(good, tmp_path):
    inv = tmp_path / "inv.dat"
    inv.write_text("x")
    code, _, err = run_cli("plan", "validate", "--inventory", str(inv), str(good))
    assert code == 3 and "unknown inventory type" in err


def test_plan_own_inventory_is_used_and_its_problems_are_located(tmp_path):
    lab = REPO / "examples" / "lab.yaml"
    if not lab.exists():
        pytest.skip("examples/lab.yaml not present")
    doc = base()
    doc["source"]["inventory"] = str(lab)
    doc["vms"] = [{"name": "redis-a", "cpus": 1}]
    doc["target"]["storage"] = {"*": "pool"}
    doc["target"]["networks"] = {"App-VLAN20": "vlan20"}
    path = tmp_path / "p.yaml"
    path.write_text(dump(doc))
    code, _, err = run_cli("plan", "validate", str(path))
    assert code == 2
    assert "vms[0].cpus: cpus 1 is fewer than the source's 2" in err
    doc["source"]["inventory"] = "missing.xlsx"
    path.write_text(dump(doc))
    code, _, err = run_cli("plan", "validate", str(path))
    assert code == 2
    assert f"{path}:6:14: source.inventory: cannot read the inventory: " in err
