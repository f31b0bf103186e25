"""Entry point: the one place where exceptions become exit codes.

``main(argv)`` returns the exit code instead of exiting, so tests can call it
in-process; ``run()`` is the console-script wrapper.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from types import FrameType

from scmt_cli.errors import InternalError, Interrupted, ScmtError, Terminated, UsageError

# Global flags (no value) and global options (one value) that may appear
# anywhere on the command line; they are moved in front of the subcommand.
_GLOBAL_FLAGS = {"--json", "--log-json", "--quiet", "-q", "--verbose", "-v", "--debug", "--no-color"}
_GLOBAL_OPTIONS = {"--state"}


class TerminatedSignal(BaseException):
    """Raised in the main thread by the SIGTERM handler.

    A BaseException so that ``except Exception`` blocks do not swallow it; code
    holding resources writes its final checkpoint in ``finally`` blocks.
    """


def hoist_global_options(argv: Sequence[str]) -> list[str]:
    """Move global options found after the subcommand to the front.

    Raises UsageError when a global option that takes a value ends the line.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_OPTIONS:
            if i + 1 >= len(args):
                raise UsageError(f"option '{arg}' requires an argument", hint="run 'scmt --help' for usage")
            front.extend(args[i : i + 2])
            i += 1
        elif any(arg.startswith(opt + "=") for opt in _GLOBAL_OPTIONS):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class _LibraryLogBridge(logging.Handler):
    """Route libraries' WARNING+ log records (and Python warnings) to the reporter.

    Without it Python's last-resort handler writes bare text on stderr, which
    breaks ``--log-json``'s promise of one JSON object per line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        from scmt_cli.cli import context

        ui = context._current
        if ui is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed format string must not kill the command
            message = str(record.msg)
        if record.levelno >= logging.ERROR:
            ui.reporter.log("error", message, logger=record.name)
        else:
            ui.reporter.log("warning", message, logger=record.name)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise TerminatedSignal()


def _wants(argv: Sequence[str], flag: str) -> bool:
    for a in argv:
        if a == "--":
            return False
        if a == flag:
            return True
    return False


def _click_kind(exc: BaseException) -> str | None:
    """Classify click's (or Typer's vendored click's) control-flow exceptions."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    module = type(exc).__module__
    if not (module.startswith("click") or module.startswith("typer")):
        return None
    if "NoArgsIsHelpError" in names:
        return "help"
    if "Exit" in names:
        return "exit"
    if "Abort" in names:
        return "abort"
    if "ClickException" in names:
        return "usage"
    return None


def subcommand(args: Sequence[str]) -> str | None:
    """The subcommand named by hoisted ``args`` (global options first), or None (``--help``, ``--version``)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _GLOBAL_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            if arg in _GLOBAL_FLAGS or any(arg.startswith(o + "=") for o in _GLOBAL_OPTIONS):
                i += 1
                continue
            return None  # --help, --version, or an unknown option: the whole application answers
        return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from scmt_cli.cli import context
    from scmt_cli.cli.context import GlobalOptions, Ui

    args = list(sys.argv[1:] if argv is None else argv)
    context.set_current(None)
    old_term = None
    try:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not in the main thread (embedded use)
        old_term = None
    bridge = _LibraryLogBridge(logging.WARNING)
    logging.getLogger().addHandler(bridge)
    logging.captureWarnings(True)

    def fallback_ui() -> Ui:
        existing = context._current
        if existing is not None:
            return existing
        return Ui(
                GlobalOptions(
                    json=_wants(args, "--json"),
                    log_json=_wants(args, "--log-json"),
                    debug=_wants(args, "--debug"),
                    no_color=_wants(args, "--no-color"),
                )
            )

    try:
        import os

        from typer.main import get_command

        from scmt_cli.cli.app import build
        from scmt_cli.cli.contract import decorate

        args = hoist_global_options(args)
        completing = any(k.startswith("_SCMT") and k.endswith("_COMPLETE") for k in os.environ)
        command = decorate(get_command(build(None if completing else subcommand(args))))
        try:
            rv = command.main(args=args, prog_name="scmt", standalone_mode=False)
        except Exception as ex:
            kind = _click_kind(ex)
            if kind == "exit":  # --help and friends
                return int(getattr(ex, "exit_code", 0) or 0)
            if kind == "help":  # a group called without a subcommand
                ui = fallback_ui()
                if not ui.opts.log_json:  # --log-json: stderr carries JSON lines only
                    ex.show()  # type: ignore[attr-defined]
                if ui.opts.json or ui.opts.log_json:  # the promised exit_error document / line
                    ctx = getattr(ex, "ctx", None)
                    path = ctx.command_path if ctx is not None else "scmt"
                    names = sorted(getattr(getattr(ctx, "command", None), "commands", {}) or ())
                    ui.report_error(UsageError(
                        f"missing command after '{path}'" + (f" (one of: {', '.join(names)})" if names else ""),
                        hint=f"run '{path} --help' for usage"))
                return 2
            if kind == "usage":
                ui = fallback_ui()
                msg = ex.format_message()  # type: ignore[attr-defined]
                ctx = getattr(ex, "ctx", None)
                hint = f"run '{ctx.command_path} --help' for usage" if ctx is not None else None
                ui.report_error(UsageError(msg, hint=hint))
                return 2
            if kind == "abort":
                raise KeyboardInterrupt from ex
            raise
        if rv == 130:  # Typer turns KeyboardInterrupt into Exit(130) and returns it
            raise KeyboardInterrupt
        done = context._current
        if done is None:  # e.g. "--help" handled by click before the callback
            return rv if isinstance(rv, int) else 0
        return done.exit_code
    except (Interrupted, Terminated) as err:  # raised by a worker's cancel check: the same words as a signal
        ui = fallback_ui()
        ui.report_error(_interrupted("SIGINT" if isinstance(err, Interrupted) else "SIGTERM", ui, args))
        return int(err.exit_code)
    except ScmtError as err:
        ui = fallback_ui()
        trace = traceback.format_exc() if ui.opts.debug else None
        ui.report_error(err, debug_trace=trace)
        return int(err.exit_code)
    except KeyboardInterrupt:
        ui = fallback_ui()
        ui.report_error(_interrupted("SIGINT", ui, args))
        return 130
    except TerminatedSignal:
        ui = fallback_ui()
        ui.report_error(_interrupted("SIGTERM", ui, args))
        return 143
    except Exception as exc:  # a bug: say so, without a traceback unless --debug
        ui = fallback_ui()
        trace = traceback.format_exc() if ui.opts.debug else None
        internal = InternalError(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="this is a bug in scmt; rerun with --debug and report the traceback",
        )
        ui.report_error(internal, debug_trace=trace)
        return internal.exit_code
    finally:
        from scmt_cli import procs

        procs.stop_all()  # no child (converter, nbdkit, qemu, hook) outlives scmt, whatever ended it
        logging.captureWarnings(False)
        logging.getLogger().removeHandler(bridge)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        ui_now = context._current
        if ui_now is not None:
            ui_now.close()


def _interrupted(signal_name: str, ui: object, argv: Sequence[str]) -> ScmtError:
    """The error line of a run stopped by a signal, with the command's one instruction (cli/contract.py)."""
    from scmt_cli.cli.contract import interrupted_error

    err: ScmtError = interrupted_error(signal_name, str(getattr(ui, "command", "scmt")), list(argv))
    return err


def run() -> None:
    sys.exit(main())
