"""The command-line contract shared by every command (issue: foundation)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scmt_cli import errors
from scmt_cli.cli.main import TerminatedSignal, hoist_global_options, main

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ["assess", "plan", "sync", "failover", "rollback", "status", "copy", "demo", "version", "agent",
               "migrate", "finalize"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_subcommand(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\s", out, re.M), f"{name} missing from --help"


def test_plan_help_lists_its_subcommands(capsys):
    code, out, _ = run(capsys, "plan", "--help")
    assert code == 0
    for name in ["init", "validate", "show", "estimate", "schema"]:
        assert re.search(rf"^\s+{name}\s", out, re.M)


def test_unknown_option_is_a_usage_error(capsys):
    code, out, err = run(capsys, "version", "--bogus")
    assert code == 2
    assert "No such option: --bogus" in err
    assert "Traceback" not in err + out


def test_unknown_option_json(capsys):
    code, out, err = run(capsys, "--json", "version", "--bogus")
    assert code == 2
    doc = json.loads(out)
    assert doc["type"] == "exit_error" and doc["code"] == 2 and doc["error"] == "usage"


def test_group_without_subcommand_shows_help_and_exits_2(capsys):
    code, out, err = run(capsys, "plan")
    assert code == 2
    assert "validate" in out + err


def test_global_options_anywhere():
    assert hoist_global_options(["version", "--json", "--state", "s.db"]) == ["--json", "--state", "s.db", "version"]
    assert hoist_global_options(["copy", "a", "--", "--json"]) == ["copy", "a", "--", "--json"]
    assert hoist_global_options(["-q", "sync", "--state=x", "p"]) == ["-q", "--state=x", "sync", "p"]


def test_state_without_its_value_is_a_usage_error(capsys):
    with pytest.raises(errors.UsageError):
        hoist_global_options(["status", "p.yaml", "--state"])
    code, out, err = run(capsys, "--json", "status", "p.yaml", "--state")
    assert code == 2
    assert json.loads(out)["message"] == "option '--state' requires an argument"
    assert err.startswith("error: option '--state' requires an argument")


def test_json_after_subcommand(capsys):
    code, out, _ = run(capsys, "version", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["version"]
    assert set(doc["tools"]) >= {"nbdkit", "qemu-img"}


def test_log_json_error_line(capsys, monkeypatch):
    from scmt_cli.services import version as version_service

    def boom():
        raise errors.SourceUnreachableError("cannot reach https://admin:hunter2@vc.example.com/sdk")

    monkeypatch.setattr(version_service, "collect", boom)
    code, out, err = run(capsys, "--log-json", "--json", "version")
    assert code == 10
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines and all("type" in rec for rec in lines)
    exit_errors = [rec for rec in lines if rec["type"] == "exit_error"]
    assert len(exit_errors) == 1 and exit_errors[0]["code"] == 10
    assert "hunter2" not in err and "hunter2" not in out
    assert json.loads(out)["code"] == 10


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (KeyboardInterrupt(), 130),
        (TerminatedSignal(), 143),
        (RuntimeError("kaboom"), 70),
        (errors.LockedError("web01 is locked by pid 42"), 40),
        (errors.VerificationError("chunk 3 differs"), 31),
    ],
)
def test_exceptions_map_to_exit_codes(capsys, monkeypatch, exc, code):
    from scmt_cli.services import version as version_service

    def boom():
        raise exc

    monkeypatch.setattr(version_service, "collect", boom)
    got, out, err = run(capsys, "version")
    assert got == code
    assert "Traceback" not in out + err
    assert err.startswith("error: ")


def test_debug_shows_traceback_of_internal_errors(capsys, monkeypatch):
    from scmt_cli.services import version as version_service

    def boom():
        raise RuntimeError("kaboom")

    monkeypatch.setattr(version_service, "collect", boom)
    code, _, err = run(capsys, "--debug", "version")
    assert code == 70
    assert "Traceback" in err and "kaboom" in err


def test_problems_are_printed_one_per_line(capsys, monkeypatch):
    from scmt_cli.services import version as version_service

    def boom():
        raise errors.PlanError(
            "plan.yaml is not valid (2 problems)",
            problems=[
                errors.Problem("plan.yaml", "expected an integer", "vms[3].cpus", 12, 9),
                errors.Problem("plan.yaml", "unknown key 'cpu'", "vms[0]", 4, 5),
            ],
        )

    monkeypatch.setattr(version_service, "collect", boom)
    code, _, err = run(capsys, "version")
    assert code == 2
    assert "plan.yaml:12:9: vms[3].cpus: expected an integer" in err.splitlines()
    assert "plan.yaml:4:5: vms[0]: unknown key 'cpu'" in err.splitlines()


def test_no_color_env(monkeypatch):
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "scmt_cli", "version", "--bogus"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 2
    assert "\x1b[" not in proc.stderr


def test_help_does_not_import_heavy_modules():
    """`scmt --help` must stay fast: no pyvmomi, httpx, sqlite, yaml or jsonschema at import."""
    code = (
        "import sys\n"
        "from scmt_cli.cli.main import main\n"
        "rc = main(['--help'])\n"
        "heavy = [m for m in ('pyVmomi', 'httpx', 'sqlite3', 'yaml', 'jsonschema', 'tenacity', 'xxhash', 'zstandard')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


HELP_ARGVS = [[*cmd.split(), "--help"] for cmd in (
    "assess", "sync", "failover", "rollback", "migrate", "finalize", "status", "copy", "demo", "version",
    "plan", "plan init", "plan validate", "plan show", "plan schema", "plan estimate",
    "agent", "agent serve", "agent restore")]
HEAVY = ("pyVmomi", "httpx", "sqlite3", "yaml", "jsonschema", "tenacity", "xxhash", "zstandard", "blake3", "openpyxl",
         "scmt_cli.services", "scmt_cli.state", "scmt_cli.vsphere", "scmt_cli.blocks", "scmt_cli.transports",
         "scmt_cli.domain.plan")


def test_subcommand_help_does_not_import_heavy_modules():
    """`scmt X --help` for every subcommand: services, adapters and their libraries load only when a command runs.

    (pydantic is not listed: typer itself imports it to parse any subcommand's parameters.)
    """
    code = (
        "import contextlib, io, json, sys\n"
        "from scmt_cli.cli.main import main\n"
        f"argvs = {HELP_ARGVS!r}\n"
        f"heavy = {HEAVY!r}\n"
        "report = {}\n"
        "for argv in argvs:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        rc = main(argv)\n"
        "    loaded = [m for m in heavy if m in sys.modules]\n"
        "    report[' '.join(argv)] = [rc, loaded, 'Usage: scmt' in out.getvalue()]\n"
        "    for m in loaded:\n"
        "        del sys.modules[m]\n"
        "print(json.dumps(report))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report) == {" ".join(a) for a in HELP_ARGVS}
    for argv, (rc, loaded, usage) in report.items():
        assert rc == 0 and usage, f"{argv}: exit {rc}, usage shown: {usage}"
        assert loaded == [], f"scmt {argv} imports {loaded}"


def test_console_script_and_module_entry_points():
    proc = subprocess.run([sys.executable, "-m", "scmt_cli", "--json", "version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["version"]


def test_readme_exit_code_table_matches_error_classes():
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|", readme, re.M))
    codes = {cls.exit_code for cls in errors.all_error_classes()}
    documented = {int(c) for c in table}
    missing = codes - documented
    assert not missing, f"exit codes not documented in README: {sorted(missing)}"
    assert {0, 1} <= documented


def test_exit_code_table_lists_every_code_and_readme_repeats_it():
    for cls in errors.all_error_classes():
        assert cls.exit_code in errors.EXIT_CODES, f"{cls.__name__} ({cls.exit_code}) missing in errors.EXIT_CODES"
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|$", readme, re.M))
    assert {int(c): m.replace("`", "") for c, m in table.items()} == errors.EXIT_CODES


def test_redaction():
    assert errors.redact_url("https://admin:s3cret@vc/sdk") == "https://admin:***@vc/sdk"
    assert "s3cret" not in errors.redact_text("failed GET https://u:s3cret@h/x?token=abc&x=1")
    assert "abc" not in errors.redact_text("failed GET https://u:s3cret@h/x?token=abc&x=1")


def test_redaction_keeps_urls_without_secrets():
    for url in ["test:///default", "nbd+unix:///disk?socket=/tmp/s", "file:///var/lib/x.img", "qemu:///system"]:
        assert errors.redact_url(url) == url


@pytest.mark.parametrize(
    "argv",
    [
        ["version"],
        ["plan", "validate", str(ROOT / "plans" / "managed.yaml")],
        ["plan", "show", str(ROOT / "plans" / "managed.yaml")],
        ["plan", "estimate", "--data", "500GiB", "--compression", "0.6", "--bandwidth", "300Mbit"],
        ["assess", "--lab", str(ROOT / "examples" / "lab.yaml")],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_json_document_has_a_warnings_list(capsys, argv):
    code = main(["--json", *argv])
    out, _ = capsys.readouterr()
    doc = json.loads(out)
    assert isinstance(doc.get("warnings"), list), sorted(doc)
    assert code in (0, 1, 20)


def test_log_json_lines_stay_valid_json_when_a_value_is_redacted(capsys):
    from scmt_cli.cli.context import GlobalOptions, Ui

    ui = Ui(GlobalOptions(log_json=True, json=True))
    ui.reporter.log("info", 'cookie vmware_soap_session="52a1b2c3d4"', url="https://u:pw@h/sdk?token=abc")
    ui.print_json({"message": 'at the end session="s3cr3t"', "nested": {"list": ["password=hunter2"]}})
    out, err = capsys.readouterr()
    rec = json.loads(err.strip())
    assert "52a1b2c3d4" not in err and "pw@" not in err and "abc" not in err
    assert rec["type"] == "log" and rec["level"] == "info"
    doc = json.loads(out)
    assert "s3cr3t" not in out and "hunter2" not in out
    assert doc["nested"]["list"] == ["password=***"]


def test_library_log_records_and_python_warnings_stay_json_under_log_json(capsys, monkeypatch):
    """A library's logging.warning() or warnings.warn() must not put a bare text line on stderr."""
    import logging
    import warnings

    from scmt_cli.services import version as version_service

    real = version_service.collect

    def noisy():
        logging.getLogger("somelib").warning("pool is full, discarding connection: %s", "vc.example.com")
        warnings.warn("Unverified HTTPS request", UserWarning, stacklevel=1)
        return real()

    monkeypatch.setattr(version_service, "collect", noisy)
    code, out, err = run(capsys, "--log-json", "--json", "version")
    assert code == 1  # one list of warnings per run: what stderr warned about is in the document and the code
    records = [json.loads(line) for line in err.splitlines()]
    messages = [r["message"] for r in records if r["type"] == "log"]
    assert "pool is full, discarding connection: vc.example.com" in messages
    assert any("Unverified HTTPS request" in m for m in messages)
    doc = json.loads(out)
    assert doc["version"] and "pool is full, discarding connection: vc.example.com" in doc["warnings"]
    code, out, err = run(capsys, "version")
    assert "warning: pool is full" in err


@pytest.mark.parametrize("argv", HELP_ARGVS, ids=lambda a: " ".join(a[:-1]))
def test_help_options_have_meaningful_metavars(capsys, monkeypatch, argv):
    """Options say what they take (NAME, DURATION, SIZE, RATE...), not typer's generic <str>/<list[str]>."""
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, *argv)
    assert code == 0
    options = out.split("Options:", 1)[1]
    generic = [line.strip() for line in options.splitlines() if re.search(r"<(str|int|float|list\[\w+\])>", line)]
    assert not generic, generic
    assert "[[" not in out.split("\n", 1)[0], out.split("\n", 1)[0]
