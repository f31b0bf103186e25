"""Issue 16 §5: README's five-minute tour runs as written, start to end.

The commands are read from README's "A five-minute tour" section (every ``$ `` line
of its console blocks) and run in one bash session, from a copy of ``examples/``,
at 80 columns: so README and reality cannot drift apart.  Each command must end
with the exit code its line states (``# exit 20``; else 0) and print what README
shows under it: table rows cell by cell (a row wrapped over several lines counts
as one), other lines whole, in order; numbers may differ (timings), ``…`` stands
for text left out, and README may leave lines out.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PORT = 18443  # the tour's fake vCenter (examples/tour.yaml names it)
BORDER = set("┏┡└┗━┳╇┴─┓┩┘┛╋┃│ ")


@dataclass
class Step:
    command: str
    exit_code: int = 0
    expected: list[str] = field(default_factory=list)


def tour_steps(text: str) -> list[Step]:
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                command, _, comment = line[2:].partition("  #")
                code = re.search(r"exit (\d+)", comment)
                steps.append(Step(command.strip(), int(code.group(1)) if code else 0))
            elif steps:
                steps[-1].expected.append(line)
    return steps


def items(lines: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Lines as ("row", cells) for table rows (wrapped rows joined) and ("text", (line,)) otherwise."""
    out: list[tuple[str, tuple[str, ...]]] = []
    last_kind = ""
    for raw in lines:
        line = raw.rstrip()
        if not line.strip() or set(line) <= BORDER - {"┃", "│"}:
            last_kind = ""
            continue
        if line.lstrip()[:1] in ("┃", "│"):
            sep = line.lstrip()[0]
            cells = [c.strip() for c in line.strip().strip(sep).split(sep)]
            continues = out and out[-1][0] == "row" and len(out[-1][1]) == len(cells) and (
                (sep == "┃" and last_kind == "┃") or (sep == "│" and last_kind == "│" and not cells[0]))
            if continues:
                prev = out[-1][1]
                out[-1] = ("row", tuple(" ".join(p for p in (a, b) if p) for a, b in zip(prev, cells, strict=True)))
            else:
                out.append(("row", tuple(cells)))
            last_kind = sep
        else:
            out.append(("text", (line.strip(),)))
            last_kind = ""
    return out


def _pattern(expected: str) -> re.Pattern[str]:
    text = " ".join(expected.split())
    pat = re.escape(text).replace("…", ".*")
    pat = re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", pat)
    return re.compile(pat)


def matches(expected: tuple[str, tuple[str, ...]], actual: tuple[str, tuple[str, ...]]) -> bool:
    if expected[0] != actual[0] or len(expected[1]) != len(actual[1]):
        return False
    return all(_pattern(e).fullmatch(" ".join(a.split())) for e, a in zip(expected[1], actual[1], strict=True))


def missing(expected_lines: list[str], output: str) -> list[str]:
    """The expected items not found, in order, in ``output``."""
    actual = items(output.splitlines())
    i = 0
    lost = []
    for exp in items(expected_lines):
        j = next((k for k in range(i, len(actual)) if matches(exp, actual[k])), None)
        if j is None:
            lost.append(" | ".join(exp[1]))
        else:
            i = j + 1
    return lost


def test_the_tour_is_found_in_readme() -> None:
    steps = tour_steps(README.read_text(encoding="utf-8"))
    commands = [s.command for s in steps]
    assert commands[0].startswith('eval "$(python -m scmt_cli.lab') and commands[-1] == "kill $SCMT_LAB_PID"
    assert {"scmt sync examples/tour.yaml", "scmt status examples/tour.yaml"} <= set(commands)
    assert [s.exit_code for s in steps if s.exit_code] == [20, 42]


def test_the_comparison_catches_a_difference() -> None:
    out = "┃ VM  ┃ state ┃\n│ web │ cut-  │\n│     │ over  │\nweb: rolled back in 0.28 s\n"
    assert missing(["│ web │ cut- over │", "web: rolled back in 12.5 s"], out) == []
    assert missing(["│ web │ syncing │"], out) == ["web | syncing"]
    assert missing(["web: rolled back in … s"], out) == []
    assert missing(["web: rolled forward in 1 s"], out) == ["web: rolled forward in 1 s"]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    if not _port_free(PORT):
        pytest.skip(f"127.0.0.1:{PORT} is in use (another tour is running)")
    steps = tour_steps(README.read_text(encoding="utf-8"))
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    script = [
        "set +e",
        f'python() {{ "{sys.executable}" "$@"; }}',
        f'scmt() {{ "{sys.executable}" -m scmt_cli "$@"; }}',
        'trap \'[ -n "$SCMT_LAB_PID" ] && kill "$SCMT_LAB_PID" 2>/dev/null\' EXIT',
    ]
    for i, step in enumerate(steps):
        script += [f"echo '@@step {i}'", f"{{ {step.command} ; }} 2>&1", 'echo "@@rc $?"']
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCMT_", "GOVC_"))}
    env.update(COLUMNS="80", NO_COLOR="1", SCMT_STATE=str(tmp_path / "state.db"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p))
    res = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    chunks = re.split(r"^@@step (\d+)\n", res.stdout, flags=re.M)[1:]
    outputs = {int(n): body for n, body in zip(chunks[::2], chunks[1::2], strict=True)}
    assert len(outputs) == len(steps), res.stdout + res.stderr
    problems = []
    for i, step in enumerate(steps):
        body, _, rc = outputs[i].rpartition("@@rc ")
        if int(rc) != step.exit_code:
            problems.append(f"$ {step.command}\n  exit {int(rc)}, README says {step.exit_code}:\n{body}")
        elif lost := missing(step.expected, body):
            problems.append(f"$ {step.command}\n  README shows, not printed: {lost}\n  printed:\n{body}")
    assert not problems, "\n".join(problems)
    assert (tmp_path / "examples" / "kvm" / "ubuntu22-web01" / "domain.xml").is_file()
    deadline = time.monotonic() + 15  # the tour's last command stops the fake vCenter: it shuts down and goes
    while not _port_free(PORT) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _port_free(PORT), "the fake vCenter is still listening after 'kill $SCMT_LAB_PID'"


def _subset(part: object, whole: object, where: str = "") -> list[str]:
    if isinstance(part, dict):
        if not isinstance(whole, dict):
            return [f"{where}: not a mapping in examples/tour.yaml"]
        return [p for k, v in part.items() for p in (_subset(v, whole[k], f"{where}.{k}") if k in whole
                                                     else [f"{where}.{k}: not in examples/tour.yaml"])]
    return [] if part == whole else [f"{where}: README says {part!r}, examples/tour.yaml {whole!r}"]


def test_the_plan_readme_shows_is_the_shipped_one() -> None:
    import yaml

    section = README.read_text(encoding="utf-8").split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    shown = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", section, re.S)[0])
    shipped = yaml.safe_load((ROOT / "examples" / "tour.yaml").read_text(encoding="utf-8"))
    assert not _subset(shown, shipped)
