"""Per-invocation user-interface state: global options, output, reporters.

One :class:`Ui` exists per ``scmt`` invocation.  Command modules get it with
:func:`current`, build a request, call one service with ``ui.reporter`` and hand
the result to :meth:`Ui.finish`.

One list of warnings per run: every warning a service logs through
``ui.reporter`` and every warning of the result is kept once, in order; the
``--json`` document carries that list (an error document too), the exit code is
at least 1 when it is not empty, and the human view prints each warning once on
stderr (as it is logged, or after the result's view).  Every ``--json`` document
also carries ``schema_version`` and ``exit_code`` (``scmt schema COMMAND``).
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


def line(console: Console, text: str, style: str | None = None) -> None:
    """Print one message line: wrapped between words on a terminal, never wrapped otherwise.

    A log file (``2> run.log``) or a pipe gets each message on one line, whatever
    ``COLUMNS`` says, so that grep finds it.
    """
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=not console.is_terminal)


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
        text = _dumps_line(record)
        with self._lock:
            self._stream.write(text + "\n")
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

    def log(self, level: Level, message: str, **fields: Any) -> None:
        if _LEVELS[level] < self._min:
            return
        prefix = {"warning": "warning: ", "error": "error: ", "debug": "debug: "}.get(level, "")
        style = self._STYLE[level]
        self._console.print(
            f"{prefix}{redact_text(message)}", style=style or None, markup=False, highlight=False,
            soft_wrap=not self._console.is_terminal
        )

    def _ensure_progress(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                _BinarySpeedColumn(),
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
            line(self._console, f"event {kind} {detail}", "dim")

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()


def _BinarySpeedColumn() -> Any:  # noqa: N802 - a column class made on first use (rich is imported lazily)
    """A progress column with the task's speed in binary units (``209.6 MiB/s``), like the sizes beside it and
    the rate options (``--bandwidth 200MiB/s``); rich's TransferSpeedColumn is decimal (MB/s)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    from scmt_cli.domain.units import format_size

    class BinarySpeed(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{format_size(speed)}/s", style="progress.data.speed")

    return BinarySpeed()


#: Distinct warnings a run keeps for its result; later ones are still printed, and counted.  A long-running
#: ``agent serve`` warns once per failed connection (each from another address): memory stays bounded.
MAX_WARNINGS = 200


class _CollectingReporter:
    """Forwards to ``inner`` and keeps the text of every warning logged (the run's warning list, each once)."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self._warnings: dict[str, None] = {}
        self._more = 0
        self._lock = threading.Lock()

    @property
    def warnings(self) -> list[str]:
        with self._lock:
            more = [f"... and {self._more} more warning(s), printed as they happened"] if self._more else []
            return [*self._warnings, *more]

    def log(self, level: Level, message: str, **fields: Any) -> None:
        """Forward the record; a warning whose text was logged already in this run is not shown again
        (e.g. the TLS warning of every vCenter connection): each warning is printed once."""
        if level == "warning":
            with self._lock:
                if message in self._warnings:
                    return
                if len(self._warnings) < MAX_WARNINGS:
                    self._warnings[message] = None
                else:
                    self._more += 1
        self.inner.log(level, message, **fields)

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        self.inner.progress(task, done, total, **fields)

    def event(self, kind: str, **fields: Any) -> None:
        self.inner.event(kind, **fields)


class SafeConsole(Console):
    """A rich Console that escapes control characters in every string it is given to print (a
    VM name with an ESC sequence in a table stays visible text; rich's own styling is untouched)."""

    def render_str(self, text: str, **kw: Any) -> Any:
        return super().render_str(escape_control(text), **kw)

    def _render_buffer(self, buffer: Any) -> str:
        # The last look before the terminal: ``rich.text.Text`` objects (table cells, assembled lines) never
        # pass through render_str, so their text is escaped here; rich's own control segments pass as they are.
        from rich.segment import Segment

        safe = (seg if seg.control else Segment(escape_control(seg.text), seg.style) for seg in buffer)
        return str(super()._render_buffer(safe))


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
        self._lines = False  # intermediate documents were printed: --json output is JSON lines
        self._emitted_logged = 0  # how many logged warnings the intermediate documents carried already
        self._shown: set[str] = set()  # result warnings printed on stderr by emit()
        self.command = "scmt"  # the command run, as 'scmt schema' names it ("plan validate"); set by the contract
        if opts.verbose or opts.debug:
            min_level = _LEVELS["debug"]
        elif opts.quiet:
            min_level = _LEVELS["warning"]
        else:
            min_level = _LEVELS["info"]
        inner: Reporter
        if opts.log_json:
            inner = JsonLinesReporter(self.stderr, min_level)
        else:
            bars = not opts.quiet and not opts.json and self.err_console.is_terminal
            inner = HumanReporter(self.err_console, min_level, bars)
        self._reporter = _CollectingReporter(inner)

    @property
    def reporter(self) -> Reporter:
        return self._reporter

    @property
    def warnings_logged(self) -> list[str]:
        """The warnings logged through :attr:`reporter` so far (each once, in order)."""
        return self._reporter.warnings

    def emit(self, result: Result, render: Callable[[Console, Any], None], *, document: str | None = None) -> None:
        """Print an intermediate result of a long run (a round of ``sync --every``) as it is made.

        Under ``--json`` it is one document on one line, and the run's output becomes JSON lines (the
        final document of :meth:`finish` is one line too); else its view (nothing under ``--quiet``).
        Its warnings are those of ``result`` and those logged since the previous document; each is
        printed on stderr once in the run.
        """
        data = result.to_dict()
        logged = self.warnings_logged
        fresh, self._emitted_logged = logged[self._emitted_logged:], len(logged)
        own = [str(w) for w in data.get("warnings") or ()]
        warnings = list(dict.fromkeys([*fresh, *own]))
        code = result.exit_code
        if code == 0 and warnings:
            code = 1
        if self.opts.json:
            self._lines = True
            self.print_json(self.document(data, document or self.command, code, warnings))
        else:
            if not self.opts.quiet:
                self.close()  # progress bars end before the view
                render(self.console, result)
                self.console.file.flush()
            for w in own:
                if w not in logged and w not in self._shown:
                    self._reporter.inner.log("warning", w)
                    self._shown.add(w)

    def finish(self, result: Result, render: Callable[[Console, Any], None], *, document: str | None = None,
               quiet: Callable[[Any], list[tuple[Level, str]]] | None = None) -> None:
        """Print ``result``: JSON on stdout under ``--json``, else the human view; then unshown warnings.

        ``document`` names the JSON Schema of the document (``scmt schema``); default: the command run.
        A result whose ``raw_document`` is true (``plan schema``, ``schema``) is printed as it is: it is
        a JSON Schema itself.  Under ``--quiet`` the view is replaced by ``quiet(result)``: the
        ``(level, line)`` pairs that say what went wrong (a blocked VM is an error line), printed on
        stderr as warnings and errors are.
        """
        self.close()
        data = result.to_dict()
        raw = bool(getattr(result, "raw_document", False))
        logged = self.warnings_logged
        own = [] if raw else [str(w) for w in data.get("warnings") or ()]
        warnings = list(dict.fromkeys([*logged, *own]))
        code = result.exit_code
        if code == 0 and warnings:
            code = 1  # a run that warned finished with warnings, whoever noticed them
        self.exit_code = code
        self.finished = True
        if self.opts.json:
            self.print_json(data if raw else self.document(data, document or self.command, code, warnings))
        elif not self.opts.quiet:
            render(self.console, result)
            self.console.file.flush()
        elif quiet is not None:
            for level, text in quiet(result):
                self._reporter.inner.log(level, text)
        shown = set(logged) | self._shown
        for w in own:
            if w not in shown and not self.opts.json:
                self._reporter.inner.log("warning", w)
                shown.add(w)

    @staticmethod
    def document(data: dict[str, Any], name: str, code: int, warnings: list[str]) -> dict[str, Any]:
        """``data`` as the command's ``--json`` document: ``schema_version`` first, ``exit_code``, ``warnings``."""
        from scmt_cli.cli.docschema import schema_version

        return {"schema_version": schema_version(name), **data, "exit_code": code, "warnings": warnings}

    def print_json(self, data: dict[str, Any]) -> None:
        """One document on stdout: indented, or on one line once the run prints JSON lines (:meth:`emit`)."""
        clean = redact_data(json.loads(json.dumps(data, default=str)))
        text = json.dumps(clean, separators=(",", ":")) if self._lines else json.dumps(clean, indent=2)
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def report_error(self, err: ScmtError, *, debug_trace: str | None = None) -> None:
        """Show an error: one line per problem; JSON forms under --json/--log-json."""
        self.close()
        data = self.document(err.to_dict(), "exit_error", err.exit_code, self.warnings_logged)
        if self.opts.log_json:
            self.stderr.write(_dumps_line({"time": _now(), **data}) + "\n")
        else:
            # A problem that only repeats the headline (a one-problem input error whose
            # message already names file:line) is not printed twice.
            lines = [p.format() for p in err.problems if p.format() != err.message and p.message != err.message]
            head = f"error: {err.message}"
            line(self.err_console, redact_text(head), "bold red")
            for text in lines:
                line(self.err_console, redact_text(text))
            if err.hint:
                line(self.err_console, f"hint: {err.hint}", "dim")
            if debug_trace:
                self.err_console.print(debug_trace, markup=False, highlight=False, soft_wrap=True)
        if self.opts.json and not self.finished:  # a run that printed its document says no more on stdout
            self.print_json(data)
        self.stderr.flush()

    def close(self) -> None:
        rep = self._reporter.inner
        if isinstance(rep, HumanReporter):
            rep.close()


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
