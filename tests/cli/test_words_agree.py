"""Issue 16 §9: words that must agree with what the CLI does.

* every command line a message names (``'scmt failover PLAN --vm web01 --direct'``,
  ``remove it with: scmt failover PLAN --vm X --test --cleanup``) parses against the
  real CLI: found by scanning every string of the product's source;
* messages are wrapped only on a terminal: in a log file each stays on one line.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cliparse import parse_problem, root

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "scmt_cli"
PLACEHOLDER = "X"  # an f-string's {expression} in a scanned message

QUOTED = re.compile(r"['`](scmt [^'`]*)['`]")
BARE = re.compile(r"\bscmt (?=[a-z-])")
OPTION = re.compile(r"\s--?[a-zA-Z]")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    """Every string literal of ``path`` but docstrings; an f-string's expressions become PLACEHOLDER."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if id(node) in skip or id(node) in parts:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else PLACEHOLDER for v in node.values)


def command_lines(text: str) -> list[str]:
    """The scmt command lines a message names: quoted ones whole, unquoted ones when they carry options.

    An unquoted mention without options ("run scmt sync first", "scmt agent on the VM") is prose.
    """
    found = [m.group(1) for m in QUOTED.finditer(text)]
    rest = QUOTED.sub("", text)
    for m in BARE.finditer(rest):
        segment = re.split(r"; |\)|, | \(|\n", rest[m.start():])[0].rstrip(".")
        if OPTION.search(segment):
            found.append(segment)
    return [line for line in found if line.split()[1:2] != [PLACEHOLDER]]


def test_the_scanner_finds_quoted_and_bare_command_lines() -> None:
    assert command_lines("run 'scmt sync X --vm X' and 'scmt failover X --vm X --direct' again") == [
        "scmt sync X --vm X", "scmt failover X --vm X --direct"]
    assert command_lines("remove it with: scmt failover PLAN --vm X --test --cleanup") == [
        "scmt failover PLAN --vm X --test --cleanup"]
    assert command_lines("run scmt sync first; the scmt agent on the VM") == []


def _all_command_lines() -> list[tuple[str, str]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "cli/contract.py":  # the help examples: test_help_contract parses them
            continue
        for lineno, text in _strings(path):
            out += [(f"{rel}:{lineno}", line) for line in command_lines(text)]
    return out


def _problem(line: str) -> str | None:
    """None when ``line`` parses, or names a command (``'scmt agent serve'``, ``'scmt COMMAND --help'``)."""
    words = [w for w in line.split()[1:] if w != "--help"]
    if words and words[0].startswith("-"):  # global options first: a full command line
        return parse_problem(line)
    cmd = root()
    for i, word in enumerate(words):
        if word.isupper() and i == 0:
            return None  # 'scmt COMMAND ...': a placeholder for any command
        sub = (getattr(cmd, "commands", None) or {}).get(word)
        if sub is None:
            return parse_problem(line) if i or not words else f"no command {word!r} in {line!r}"
        cmd = sub
    return None  # only command names: a reference to the command, not a command line


def test_every_command_line_a_message_names_parses_against_the_cli() -> None:
    lines = _all_command_lines()
    assert len(lines) >= 10, lines  # the scan sees the hints (sync, failover --test --cleanup, rollback...)
    problems = [f"{where}: {problem}" for where, line in lines if (problem := _problem(line))]
    assert not problems, "\n".join(problems)


def test_the_checker_refuses_options_a_command_lacks() -> None:
    assert _problem("scmt migrate PLAN --vm web01 --direct") is not None
    assert _problem("scmt sync PLAN --resume") is not None
    assert _problem("scmt resync PLAN") is not None
    assert _problem("scmt failover PLAN --vm web01 --direct") is None
    assert _problem("scmt agent serve") is None and _problem("scmt COMMAND --help") is None


def test_a_sync_interrupted_in_an_agent_pass_does_not_name_copys_resume() -> None:
    """The copy engine's default early-stop hint names 'scmt copy --resume'; sync passes its own."""
    for path in sorted((SRC / "services" / "migration").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CopyOptions":
                assert "resume_hint" in {k.arg for k in node.keywords}, f"{path.name}:{node.lineno}"


# -- wrap only on a terminal ------------------------------------------------------------------


def test_messages_to_a_file_stay_on_one_line_whatever_the_width(tmp_path: Path) -> None:
    plan = tmp_path / ("a-plan-file-with-a-rather-long-name-" + "x" * 80 + ".yaml")
    env = {**os.environ, "COLUMNS": "40", "SCMT_STATE": str(tmp_path / "s.db")}
    with open(tmp_path / "err.log", "w") as err, open(tmp_path / "out.log", "w") as out:
        res = subprocess.run([sys.executable, "-m", "scmt_cli", "status", str(plan)], stdout=out, stderr=err,
                             env=env, timeout=60)
    assert res.returncode == 2
    lines = (tmp_path / "err.log").read_text().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [f"error: {plan}: no such plan file"], lines
    assert [line for line in lines if line.startswith("hint: ")] == [
        f"hint: check the path, or write a starter plan with 'scmt plan init {plan}'"], lines


def test_a_long_summary_line_on_stdout_stays_on_one_line(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from scmt_cli.cli.context import GlobalOptions, Ui
    from scmt_cli.cli.sync import render
    from scmt_cli.services.migration.context import VmOutcome
    from scmt_cli.services.migration.sync import SyncResult

    monkeypatch.setenv("COLUMNS", "60")
    names = [f"application-server-{i:02d}" for i in range(6)]
    result = SyncResult("p", rounds=[[VmOutcome(n, ok=False, state="syncing", action="sync", error="refused",
                                                error_code=10) for n in names]])
    ui = Ui(GlobalOptions(no_color=True))
    render(ui.console, result)
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("6 VM(s) failed")]
    assert len(summary) == 1 and summary[0].endswith("again to resume them"), out
