"""Per-invocation user-interface state: global options, output, reporters.

One :class:`Ui` exists per ``scmt`` invocation.  Command modules get it with
:func:`current`, build a request, call one service with ``ui.reporter`` and hand
the result to :meth:`Ui.finish`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TextIO

from rich.console import Console

from scmt_cli.errors import ScmtError, escape_control, redact_text
from scmt_cli.events import Level, NullReporter, Reporter
from scmt_cli.results import Result


@dataclass
class GlobalOptions:
    json: bool = False
    log_json: bool = False
    quiet: bool = False
    verbose: bool = False
    debug: bool = False
    no_color: bool = False
    state: str | None = None  # a file path or a postgresql:// URL


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def redact_data(value: Any) -> Any:
    """``value`` with every string (keys too) passed through :func:`redact_text` (URL passwords,
    ``token=...`` redacted, control characters escaped), structure kept.

    Redacting the encoded JSON text instead could eat a closing quote and
    print invalid JSON; redacting the values keeps every line parseable.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(k) if isinstance(k, str) else k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    return value


def _dumps_line(record: dict[str, Any]) -> str:
    return json.dumps(redact_data(json.loads(json.dumps(record, default=str))), separators=(",", ":"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class JsonLinesReporter:
    """``--log-json``: every record is one JSON object on one stderr line.

    Progress records are throttled to one per task every ``interval`` seconds,
    plus the final one.
    """

    def __init__(self, stream: IO[str], min_level: int, interval: float = 0.5) -> None:
        self._stream = stream
        self._min = min_level
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any]) -> None:
        line = _dumps_line(record)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def log(self, level: Level, message: str, **fields: Any) -> None:
        if _LEVELS[level] >= self._min:
            self._write({"type": "log", "time": _now(), "level": level, "message": message, **fields})

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        with self._lock:
            last = self._last.get(task, 0.0)
            if not final and now - last < self._interval:
                return
            self._last[task] = now
        self._write({"type": "progress", "time": _now(), "task": task, "done": done, "total": total, **fields})

    def event(self, kind: str, **fields: Any) -> None:
        self._write({"type": "event", "time": _now(), "kind": kind, **fields})


class HumanReporter:
    """Coloured log lines and rich progress bars on stderr."""

    _STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red"}

    def __init__(self, console: Console, min_level: int, bars: bool) -> None:
        self._console = console
        self._min = min_level
        self._bars = bars
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.shown_warnings: set[str] = set()  # so --quiet's closing summary does not repeat them

    def log(self, level: Level, message: str, **fields: Any) -> None:
        if _LEVELS[level] < self._min:
            return
        if level == "warning":
            self.shown_warnings.add(message)
        prefix = {"warning": "warning: ", "error": "error: ", "debug": "debug: "}.get(level, "")
        style = self._STYLE[level]
        self._console.print(
            f"{prefix}{redact_text(message)}", style=style or None, markup=False, highlight=False, soft_wrap=True
        )

    def _ensure_progress(self) -> Any:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
        return self._progress

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        if not self._bars:
            return
        with self._lock:
            prog = self._ensure_progress()
            tid = self._tasks.get(task)
            if tid is None:
                tid = prog.add_task(task, total=total)
                self._tasks[task] = tid
            prog.update(tid, completed=done, total=total)

    def event(self, kind: str, **fields: Any) -> None:
        if _LEVELS["debug"] >= self._min:
            detail = " ".join(f"{k}={v}" for k, v in fields.items())
            self._console.print(f"event {kind} {detail}", style="dim", markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()


class SafeConsole(Console):
    """A rich Console that escapes control characters in every string it is given to print (a
    VM name with an ESC sequence in a table stays visible text; rich's own styling is untouched)."""

    def render_str(self, text: str, **kw: Any) -> Any:
        return super().render_str(escape_control(text), **kw)


class Ui:
    def __init__(self, opts: GlobalOptions, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.opts = opts
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        no_color = opts.no_color or bool(os.environ.get("NO_COLOR"))
        color: dict[str, Any] = {"color_system": None, "no_color": True} if no_color else {}
        # markup=False: strings (VM names, datastore paths like "[ds1] vm/vm.vmdk", error
        # messages) are printed as they are; views style with rich.text.Text, never markup.
        self.console = SafeConsole(file=self.stdout, highlight=False, soft_wrap=False, markup=False, **color)
        self.err_console = SafeConsole(file=self.stderr, highlight=False, stderr=True, markup=False, **color)
        self.exit_code = 0
        self.finished = False
        if opts.verbose or opts.debug:
            min_level = _LEVELS["debug"]
        elif opts.quiet:
            min_level = _LEVELS["warning"]
        else:
            min_level = _LEVELS["info"]
        self._reporter: Reporter
        if opts.log_json:
            self._reporter = JsonLinesReporter(self.stderr, min_level)
        else:
            bars = not opts.quiet and not opts.json and self.err_console.is_terminal
            self._reporter = HumanReporter(self.err_console, min_level, bars)

    @property
    def reporter(self) -> Reporter:
        return self._reporter

    def finish(self, result: Result, render: Callable[[Console, Any], None]) -> None:
        """Print ``result``: JSON on stdout under ``--json``, else the human view."""
        self.close()
        self.exit_code = result.exit_code
        self.finished = True
        if self.opts.json:
            self.print_json(result.to_dict())
        elif not self.opts.quiet:
            render(self.console, result)
        elif result.exit_code:
            rep = self._reporter
            shown = rep.shown_warnings if isinstance(rep, HumanReporter) else set()
            render_warnings_only(self.err_console, result, already_shown=shown)

    def print_json(self, data: dict[str, Any]) -> None:
        text = json.dumps(redact_data(json.loads(json.dumps(data, default=str))), indent=2)
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def report_error(self, err: ScmtError, *, debug_trace: str | None = None) -> None:
        """Show an error: one line per problem; JSON forms under --json/--log-json."""
        self.close()
        data = err.to_dict()
        if self.opts.log_json:
            self.stderr.write(_dumps_line({"time": _now(), **data}) + "\n")
        else:
            # A problem that only repeats the headline (a one-problem input error whose
            # message already names file:line) is not printed twice.
            lines = [p.format() for p in err.problems if p.format() != err.message and p.message != err.message]
            head = f"error: {err.message}"
            self.err_console.print(redact_text(head), style="bold red", markup=False, highlight=False, soft_wrap=True)
            for line in lines:
                self.err_console.print(redact_text(line), markup=False, highlight=False, soft_wrap=True)
            if err.hint:
                self.err_console.print(f"hint: {err.hint}", style="dim", markup=False, highlight=False, soft_wrap=True)
            if debug_trace:
                self.err_console.print(debug_trace, markup=False, highlight=False, soft_wrap=True)
        if self.opts.json:
            self.print_json(data)
        self.stderr.flush()

    def close(self) -> None:
        rep = self._reporter
        if isinstance(rep, HumanReporter):
            rep.close()


def render_warnings_only(console: Console, result: Result, already_shown: set[str] | None = None) -> None:
    """``--quiet``'s view of a result: its warnings, minus those already logged during the run."""
    data = result.to_dict()
    for w in data.get("warnings", []) or []:
        if already_shown and w in already_shown:
            continue
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)


_current: Ui | None = None


def set_current(ui: Ui | None) -> None:
    global _current
    _current = ui


def current() -> Ui:
    """The Ui of this invocation (a default one when called outside ``main``)."""
    global _current
    if _current is None:
        _current = Ui(GlobalOptions())
    return _current


def null_reporter() -> Reporter:
    return NullReporter()
