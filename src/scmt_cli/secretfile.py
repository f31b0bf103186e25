"""Reading a secret from a file (a vCenter password file, an agent token file), with bounds.

:func:`read_secret_file` is the one reader of secret files.  It accepts only a
regular file (after symlinks) of at most :data:`MAX_SECRET_BYTES`: a password or
token is a few dozen bytes, so anything else -- ``/dev/zero``, ``/dev/urandom``,
a FIFO nobody writes, a directory, a multi-gigabyte file named by mistake -- is
refused at once with :class:`~scmt_cli.errors.ConfigError` naming the setting and
the path, instead of reading until memory runs out or blocking forever.  The
secret itself is never part of a message.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from scmt_cli.errors import ConfigError

#: The largest secret file read (64 KiB: far above any password, token or key a setting names).
MAX_SECRET_BYTES = 64 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def read_secret_file(path: str | Path, what: str, kind: str = "secret file") -> bytes:
    """The bytes of the secret file ``path``; ``what`` names the setting in messages (``source.password_file``).

    Raises ConfigError (exit 5) when it cannot be read, is not a regular file, or
    is larger than :data:`MAX_SECRET_BYTES`.
    """
    p = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ConfigError(f"{what}: {kind} {p} is a directory, not a file") from None
        raise ConfigError(f"{what}: cannot read the {kind} {p}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            found = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
            raise ConfigError(f"{what}: {kind} {p} is {found}; a secret must be in a regular file",
                              hint="use a regular file that holds only the secret (at most 64 KiB)")
        if st.st_size > MAX_SECRET_BYTES:
            raise ConfigError(f"{what}: {kind} {p} has {st.st_size} bytes, more than a secret file holds "
                              f"({MAX_SECRET_BYTES // 1024} KiB at most)",
                              hint="use a regular file that holds only the secret")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SECRET_BYTES:  # a file that grows while read is bounded too
            piece = os.read(fd, MAX_SECRET_BYTES + 1 - size)
            if not piece:
                break
            chunks.append(piece)
            size += len(piece)
        if size > MAX_SECRET_BYTES:
            raise ConfigError(f"{what}: {kind} {p} is larger than {MAX_SECRET_BYTES // 1024} KiB; not a secret file")
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read the {kind} {p}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
