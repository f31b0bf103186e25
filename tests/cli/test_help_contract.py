"""Issue 16 §1: every command's --help lists exit codes, global options and real examples, without types."""

from __future__ import annotations

import re

import pytest

from scmt_cli.cli.contract import CHOICES, COMMANDS, walk
from scmt_cli.cli.main import main
from scmt_cli.errors import EXIT_CODES, all_error_classes

from .cliparse import parse_problem, root

PATHS = [path for path, _ in walk(root())]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_a_contract_entry():
    assert set(PATHS) <= set(COMMANDS), sorted(set(PATHS) - set(COMMANDS))


@pytest.mark.parametrize("path", PATHS)
def test_every_help_lists_exit_codes_global_options_and_an_example(capsys, path):
    argv = [] if path == "scmt" else path.split()
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    assert re.search(r"^Exit codes", out, re.M), out
    assert re.search(r"^\s+0\s+ok$", out, re.M) or path != "scmt"
    for opt in ("--json", "--quiet", "--state", "--log-json"):
        assert opt in out
    examples = re.findall(r"^\s+\$ (scmt .*)$", out, re.M)
    assert examples, f"{path}: no example"
    for line in examples:
        assert parse_problem(line) is None, parse_problem(line)
    for leak in ("<path>", "<str>", "<int>", "<float>", "list[", "{PLAN}", "{SRC", "<list"):
        assert leak not in out, f"{path} --help shows {leak}"


@pytest.mark.parametrize("path", PATHS)
def test_listed_exit_codes_exist(path):
    for c in COMMANDS[path].codes:
        assert c in EXIT_CODES


def test_exit_code_table_covers_every_error_class():
    assert {cls.exit_code for cls in all_error_classes()} <= set(EXIT_CODES)


def test_help_exit_codes_page_lists_every_code(capsys):
    code, out, _ = run(capsys, "help", "exit-codes")
    assert code == 0
    assert [int(x) for x in re.findall(r"^\s*(\d+)\s", out, re.M)] == list(EXIT_CODES)


def test_unknown_help_topic_is_a_usage_error(capsys):
    code, _, err = run(capsys, "help", "exit-code")
    assert code == 2 and "did you mean 'exit-codes'" in err


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag(capsys, flag):
    from scmt_cli import __version__

    code, out, _ = run(capsys, flag)
    assert code == 0 and out.strip() == f"scmt {__version__}"


def test_usage_lines_are_conventional(capsys):
    _, out, _ = run(capsys, "plan", "validate", "--help")
    assert "Usage: scmt plan validate [OPTIONS] PLAN...\n" in out
    _, out, _ = run(capsys, "copy", "--help")
    assert "Usage: scmt copy [OPTIONS] SRC DST\n" in out


def test_choices_match_the_domain():
    from scmt_cli.domain.assess import ALL_METHODS
    from scmt_cli.domain.plan.model import SourceAction

    assert set(CHOICES["--method"]) == set(ALL_METHODS)
    assert set(CHOICES["--source-action"]) == set(SourceAction.__args__)


def _complete(monkeypatch, capsys, line: str) -> list[str]:
    words = line.split(" ")
    monkeypatch.setenv("_SCMT_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", str(len(words) - 1))
    with pytest.raises(SystemExit) as info:
        main(words[1:])
    assert info.value.code == 0
    out, _ = capsys.readouterr()
    return out.split()


def test_completion_of_fixed_choices(monkeypatch, capsys):
    assert _complete(monkeypatch, capsys, "scmt failover p.yaml --source-action d") == ["disconnect-network"]
    assert set(_complete(monkeypatch, capsys, "scmt assess --method a")) == {"agentless", "agent"}


def test_completion_of_vm_names_from_the_plan(monkeypatch, capsys, tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("version: 1\nvms:\n  - name: web01\n  - name: web02\n  - name: db01\n")
    assert _complete(monkeypatch, capsys, f"scmt sync {plan} --vm we") == ["web01", "web02"]
