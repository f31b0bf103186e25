"""A throw-away PostgreSQL cluster for tests and benchmarks (initdb + pg_ctl in a temp dir).

PostgreSQL refuses to run as root: when this process is root the server runs
as the ``postgres`` system user (``runuser -u postgres --``).  The server
listens on 127.0.0.1 at a free port and on a unix socket in the temp dir.
Clients connect over TCP as the role ``scmt`` with a password taken from a
0600 passfile (``PGPASSFILE``), never from the URL.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """PostgreSQL cannot be started here (binaries missing, no non-root user, initdb failed)."""


def find_bindir() -> Path | None:
    env = os.environ.get("SCMT_PG_BINDIR")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, *, fsync: bool = False) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise ClusterUnavailable("no PostgreSQL server binaries (initdb, pg_ctl); apt-get install postgresql")
        self.bindir = bindir
        self.fsync = fsync
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="scmt-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailable("running as root and there is no 'postgres' user to run the server") from None
            if shutil.which("runuser") is None:
                raise ClusterUnavailable("running as root and runuser is missing")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.sockdir = self.root  # the unix socket lives next to the data directory
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self.client_dir = Path(tempfile.mkdtemp(prefix="scmt-pgclient-"))
        self.passfile = self.client_dir / "pgpass"
        self._schemas = itertools.count(1)
        self.started = False

    # -- processes -------------------------------------------------------------------
    def _run(self, *args: str, input_text: str | None = None) -> str:
        proc = subprocess.run([*self.as_user, *args], capture_output=True, text=True, input=input_text,
                              timeout=120, cwd=self.root)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        return proc.stdout

    def init(self) -> PgCluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions")
        self.start()
        self.psql(f"CREATE ROLE scmt LOGIN PASSWORD '{self.password}'")
        self.psql("CREATE DATABASE scmt OWNER scmt")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:{self.port}:*:scmt:{self.password}\n")
        return self

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockdir} -c max_connections=200"
                f" -c fsync={'on' if self.fsync else 'off'} -c synchronous_commit={'on' if self.fsync else 'off'}"
                " -c full_page_writes=off")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts,
                  "-w", "-t", "60", "start")
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
            self.started = False

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except ClusterUnavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.client_dir, ignore_errors=True)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockdir),
                         "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-c", sql)

    # -- clients ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"postgresql://scmt@127.0.0.1:{self.port}/scmt"

    def new_schema(self) -> str:
        """A fresh, empty schema; the URL selects it through ``search_path``."""
        name = f"t{os.getpid()}_{next(self._schemas)}"
        self.psql(f"CREATE SCHEMA {name} AUTHORIZATION scmt;", db="scmt")
        return f"{self.base_url}?options=-csearch_path%3D{name}"

    def env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.passfile)}
