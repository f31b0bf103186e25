"""Developer sessions: tests, lint, typecheck, bench, demo.

`nox -s tests` runs exactly the README's test command inside a fresh venv.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy", "types-PyYAML")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against cp, qemu-img and nbdcopy, measured in the same run, the state store's cost and the
    agent's hot-backup rounds.

    Needs qemu-utils, nbdkit (file plugin; delay and rate filters), libnbd-bin (nbdcopy) and postgresql
    (see .ci/run); the agent rows need root and tracefs (else they are skipped, with the reason).
    `-- --only remote` (or store, agent...) runs one part; `-- --only inflight` the --in-flight sweep behind
    the defaults; `-- --size 1GiB --repeat 3` a shorter run.
    """
    session.install("-e", ".[postgresql]")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("scmt", "demo", *session.posargs)
