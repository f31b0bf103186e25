"""Reading datastore files over vCenter's ``/folder`` HTTP endpoint (httpx, Range GET).

A :class:`FolderSession` holds one httpx client per vCenter session: the
session cookie (sent as a header, never logged), the connection's TLS context
and a pool of ``connections`` keep-alive connections (default 16, the engine's
in-flight default for remote sources, so every reader thread has its own
connection and that many ranged GETs are in flight).  :class:`FolderDiskSource`
is a :class:`~scmt_cli.transports.base.BlockSource` over one flat disk file;
``readinto`` receives the body straight into the caller's buffer through the
session's :class:`~scmt_cli.vsphere.ranges.RangeReader` (same TLS context,
same number of connections; every answer but a plain ``206`` goes to httpx),
``readinto_many`` sends the GETs of several ranges at once (the first in the
calling thread, the others on a small shared pool of threads).

Errors: 401/403 trigger one re-login through the session's ``relogin`` callback,
then an AuthenticationError; 404 is a SourceOperationError; 5xx, resets and
timeouts are transient TransportErrors retried a few times (tenacity).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from scmt_cli.errors import (
    AuthenticationError,
    SizeMismatchError,
    SourceOperationError,
    TransportError,
)
from scmt_cli.transports.base import Extent, Identity, SourceDefaults
from scmt_cli.vsphere.ranges import RangeReader
from scmt_cli.vsphere.tls import classify_connect_error

# httpcore's DEBUG trace prints raw request/response headers, session cookies included.
# Secrets never reach logs, so its level is pinned above DEBUG (httpx's INFO lines are kept).
logging.getLogger("httpcore").setLevel(logging.INFO)


DEFAULT_CONNECTIONS = 16
_STREAM_RANGES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="scmt-folder-range")


def split_datastore_path(path: str) -> tuple[str, str]:
    """``"[ds1] vm/vm.vmdk"`` -> ``("ds1", "vm/vm.vmdk")``."""
    if not path.startswith("[") or "] " not in path:
        raise ValueError(f"not a datastore path: {path!r}")
    ds, _, rel = path[1:].partition("] ")
    return ds, rel


def flat_path(descriptor: str) -> str:
    """The flat extent of a monolithic-flat VMDK: ``vm/vm.vmdk`` -> ``vm/vm-flat.vmdk``."""
    if not descriptor.endswith(".vmdk"):
        raise ValueError(f"not a .vmdk path: {descriptor!r}")
    return descriptor[: -len(".vmdk")] + "-flat.vmdk"


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.transient


class FolderSession:
    """httpx client for ``/folder`` with the vCenter session cookie.

    ``cookie`` returns the current ``name=value`` cookie pair; ``relogin``
    renews the session (called once on 401) and may be None.
    """

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext,
        cookie: Callable[[], str],
        relogin: Callable[[], None] | None = None,
        *,
        connections: int = DEFAULT_CONNECTIONS,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._cookie = cookie
        self._relogin = relogin
        self._relogin_lock = threading.Lock()
        #: the data path of ranged reads (None behind a proxy: httpx does everything then)
        self.ranges = (RangeReader(self.base_url, ssl_context, connections=connections, timeout=timeout)
                       if RangeReader.usable(self.base_url) else None)
        self._client = httpx.Client(
            verify=ssl_context,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,
        )

    def cookie(self) -> str:
        """The current session cookie (``name=value``), for a request made outside httpx."""
        return self._cookie()

    def url(self, datacenter: str, datastore: str, rel_path: str) -> str:
        return (
            f"{self.base_url}/folder/{quote(rel_path)}?dcPath={quote(datacenter, safe='')}"
            f"&dsName={quote(datastore, safe='')}"
        )

    def request(self, method: str, url: str, *, what: str, stream: bool = False, **kw: object) -> httpx.Response:
        """One request with the cookie; re-login once on 401/403; map failures to ScmtErrors.

        With ``stream=True`` the body of a successful answer is left unread: the
        caller reads it (``iter_bytes``) and must close the response.
        """
        for attempt in (1, 2):
            headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
            headers["Cookie"] = self._cookie()
            try:
                req = self._client.build_request(method, url, headers=headers, **kw)  # type: ignore[arg-type]
                resp = self._client.send(req, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                err = classify_connect_error(exc, what)
                if isinstance(err, TransportError):
                    raise err from None
                if err.exit_code == 10:
                    raise TransportError(f"{what}: {err.message}", transient=True) from None
                raise err from None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                raise TransportError(f"{what}: {type(exc).__name__} while reading", transient=True) from None
            if stream and resp.status_code not in (200, 206):
                resp.close()  # error answers carry no body worth reading
            if resp.status_code in (401, 403) and attempt == 1 and self._relogin is not None:
                with self._relogin_lock:
                    if self._cookie() == headers["Cookie"]:  # another thread may have renewed it already
                        self._relogin()
                kw["headers"] = {k: v for k, v in headers.items() if k != "Cookie"}
                continue
            if resp.status_code in (401, 403):
                raise AuthenticationError(f"{what}: the vCenter session was refused (HTTP {resp.status_code})")
            if resp.status_code == 404:
                raise SourceOperationError(f"{what}: file not found on the datastore (HTTP 404)")
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TransportError(f"{what}: server error HTTP {resp.status_code}", transient=True)
            return resp
        raise AssertionError("unreachable")

    def upload(self, datacenter: str, datastore: str, rel_path: str, data: bytes) -> None:
        """PUT a file on a datastore (tests: vcsim's flat disks start empty)."""
        url = self.url(datacenter, datastore, rel_path)
        what = f"upload [{datastore}] {rel_path}"
        resp = self.request("PUT", url, what=what, content=data)
        if resp.status_code not in (200, 201, 204):
            raise SourceOperationError(f"{what}: HTTP {resp.status_code}")

    def close(self) -> None:
        if self.ranges is not None:
            self.ranges.close()
        self._client.close()


class FolderDiskSource(SourceDefaults):
    """A flat disk file on a datastore, read with HTTP Range requests.

    ``extents()`` reports one ``data`` extent (HTTP knows nothing about
    allocation) unless ``allocated`` areas were given (e.g. from CBT ``"*"``,
    used only as a hint by callers that trust it).  ``identity`` (the snapshot
    and the disk's changeId, given by the adapter) is what ``identity()``
    answers.  Thread-safe.
    """

    def __init__(
        self,
        session: FolderSession,
        datacenter: str,
        datastore_path: str,
        size: int,
        *,
        label: str = "",
        allocated: list[Extent] | None = None,
        attempts: int = 4,
        identity: dict[str, str | int | None] | None = None,
    ) -> None:
        self._session = session
        self._identity = Identity({**identity, "size": size}) if identity is not None else None
        self._ds, self._rel = split_datastore_path(datastore_path)
        self._url = session.url(datacenter, self._ds, self._rel)
        parts = urlsplit(self._url)
        self._target = f"{parts.path}?{parts.query}"  # what the range reader asks for
        self._size = size
        self._label = label or datastore_path
        self._allocated = allocated
        self._attempts = attempts
        self.requests = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def thread_safe(self) -> bool:
        return True

    def describe(self) -> str:
        return f"vsphere-folder:[{self._ds}] {self._rel}"

    def identity(self) -> Identity | None:
        return self._identity

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        end = self._size if length is None else min(self._size, offset + length)
        if self._allocated is None:
            if end > offset:
                yield Extent(offset, end - offset, "data")
            return
        pos = offset
        for ext in self._allocated:
            lo, hi = max(ext.offset, offset), min(ext.end, end)
            if hi <= lo:
                continue
            if lo > pos:
                yield Extent(pos, lo - pos, "hole")
            yield Extent(lo, hi - lo, "data")
            pos = hi
        if pos < end:
            yield Extent(pos, end - pos, "hole")

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def readinto(self, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes at ``offset``, streamed from the response into it."""
        view = memoryview(buf).cast("B")
        length = len(view)
        if offset < 0:
            raise ValueError("negative offset or length")
        if length == 0:
            return
        if offset + length > self._size:
            raise SizeMismatchError(
                f"{self._label}: read [{offset}, {offset + length}) past the end of the disk ({self._size} bytes)"
            )
        retry(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )(self._readinto_once)(offset, view)

    def readinto_many(self, ranges: list[tuple[int, memoryview]]) -> None:
        """Fill every ``(offset, buf)``: one GET per range, all in flight at once.

        Every GET is awaited before the first error is raised, so no buffer is
        still being filled when the caller sees it.
        """
        if len(ranges) <= 1:
            for offset, buf in ranges:
                self.readinto(offset, buf)
            return
        futures = [_STREAM_RANGES.submit(self.readinto, offset, buf) for offset, buf in ranges[1:]]
        first: BaseException | None = None
        try:
            self.readinto(*ranges[0])
        except BaseException as exc:
            first = exc
        for fut in futures:
            try:
                fut.result()
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first

    def _readinto_once(self, offset: int, view: memoryview) -> None:
        self.requests += 1
        length = len(view)
        what = f"{self._label}: read [{offset}, {offset + length})"
        fast = self._session.ranges
        if fast is not None and fast.read_into(self._target, offset, view, self._session.cookie(), what):
            return
        resp = self._session.request(
            "GET", self._url, what=what, stream=True,
            headers={"Range": f"bytes={offset}-{offset + length - 1}", "Accept-Encoding": "identity"},
        )
        try:
            if resp.status_code == 416:
                raise SizeMismatchError(f"{what}: the file is shorter than the disk (HTTP 416)")
            if resp.status_code == 200 and offset != 0:
                raise SourceOperationError(f"{what}: the server ignored the Range header (HTTP 200)")
            if resp.status_code not in (200, 206):
                raise SourceOperationError(f"{what}: unexpected HTTP {resp.status_code}")
            got = 0
            try:
                for piece in resp.iter_bytes():
                    n = len(piece)
                    if got + n > length:
                        if resp.status_code != 200:
                            raise TransportError(f"{what}: the server sent more than {length} bytes", transient=True)
                        n = length - got  # a server that ignores Range on a small file: keep the head
                        view[got:length] = piece[:n]
                        got = length
                        break
                    view[got : got + n] = piece
                    got += n
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                raise TransportError(f"{what}: {type(exc).__name__} while reading", transient=True) from None
            if got != length:
                raise TransportError(f"{what}: got {got} bytes", transient=True)
        finally:
            resp.close()

    def close(self) -> None:
        return None
