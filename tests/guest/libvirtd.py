"""A private libvirt daemon for tests: libvirt's QEMU driver, isolated from the machine it runs on.

``libvirtd`` runs as root in its own mount and network namespaces (``unshare -m -n``): its state, config,
cache and log folders (``/run``, ``/etc/libvirt``, ``/var/lib``, ``/var/cache``, ``/var/log``) are a temporary
folder or a tmpfs that only it sees, its qemu.conf runs guests as root without security labels or cgroups,
and its only network is a bridge (``scmtbr0``) inside its network namespace.  Its socket is a file in the
temporary folder, so a test connects with ``qemu+unix:///system?socket=PATH``.  Nothing of the host's libvirt
(there may be none) is used or changed.

:meth:`PrivateLibvirtd.stop` destroys every domain through the API, ends the daemon, then kills any process
still in its namespaces (a QEMU it started), by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "scmtbr0"
QEMU_USER = "libvirt-qemu"  # Debian's build default; libvirtd looks it up before reading qemu.conf

LIBVIRTD_CONF = """unix_sock_dir = "{sock}"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:{root}/libvirtd.log"
"""

QEMU_CONF = """user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"""

SCRIPT = f"""set -e
D="$1"
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt
mount --bind "$D/etc" /etc/libvirt
for d in /var/lib /var/cache /var/log; do mount -t tmpfs tmpfs "$d"; mkdir -p "$d/libvirt"; done
if ! getent passwd {QEMU_USER} >/dev/null; then
  cp /etc/passwd "$D/passwd"; echo "{QEMU_USER}:x:64055:64055::/nonexistent:/usr/sbin/nologin" >> "$D/passwd"
  mount --bind "$D/passwd" /etc/passwd
fi
if ! getent group {QEMU_USER} >/dev/null; then
  cp /etc/group "$D/group"; echo "{QEMU_USER}:x:64055:" >> "$D/group"
  mount --bind "$D/group" /etc/group
fi
ip link set lo up
ip link add {BRIDGE} type bridge
ip link set {BRIDGE} up
exec libvirtd -f "$D/etc/libvirtd.conf" -p "$D/libvirtd.pid"
"""

TOOLS = ("libvirtd", "unshare", "ip", "getent", "mount", "qemu-system-x86_64")


def missing() -> list[str]:
    """What a private libvirtd needs and this machine lacks (empty: it can start)."""
    out = [t for t in TOOLS if shutil.which(t) is None]
    try:
        import libvirt  # noqa: F401
    except ImportError:
        out.append("libvirt-python (pip install -e '.[libvirt]')")
    if not Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so").exists():
        out.append("libvirt's QEMU driver (apt-get install libvirt-daemon-driver-qemu)")
    if os.geteuid() != 0:
        out.append("root (for the private mount and network namespaces)")
    return out


@dataclass
class PrivateLibvirtd:
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.root / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join((self.root / "libvirtd.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no libvirtd.log)"

    def _namespace_pids(self) -> list[int]:
        """Every process in the daemon's mount namespace (the daemon, the QEMUs it started)."""
        try:
            ns = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
        except OSError:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                import libvirt

                conn = libvirt.open(self.uri)
                try:
                    for dom in conn.listAllDomains():
                        if dom.isActive():
                            dom.destroy()
                        if dom.isPersistent():
                            dom.undefine()
                finally:
                    conn.close()
            except Exception:  # noqa: BLE001 - teardown: the kill below still ends everything
                pass
        leftovers = [p for p in self._namespace_pids() if p != self.proc.pid]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start(root: Path, timeout: float = 60.0) -> PrivateLibvirtd:
    """Start the daemon in ``root`` and wait until its socket answers; raise RuntimeError with its log if not."""
    import libvirt

    for sub in ("etc", "sock"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(sock=root / "sock", root=root))
    (root / "etc" / "qemu.conf").write_text(QEMU_CONF)
    out = open(root / "libvirtd.out", "wb")  # noqa: SIM115 - the daemon's stdio; closed below
    try:
        proc = subprocess.Popen(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", SCRIPT, "sh",
                                 str(root)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()
    daemon = PrivateLibvirtd(root, proc)
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if daemon.socket.exists():
            try:
                libvirt.open(daemon.uri).close()
                return daemon
            except libvirt.libvirtError:
                pass
        time.sleep(0.2)
    daemon.stop()
    why = (root / "libvirtd.out").read_text(errors="replace").strip()
    raise RuntimeError(f"the private libvirtd did not start (exit {proc.poll()}): {why}\n{daemon.log_tail()}")
