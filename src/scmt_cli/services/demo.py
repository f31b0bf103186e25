"""``scmt demo``: the whole flow on a lab built on the fly, offline, in seconds.

Steps (each timed and reported): build the lab (fake vCenter over HTTPS on
127.0.0.1, four small VMs, a workload writing to every running VM) -> assess
-> write a plan -> sync (seed, then two incrementals while the workload
writes) -> fail over ``db01`` (network disconnected) -> fail over the Redis
group (``source_action: none``; its pre hooks stop the simulated service) ->
verify every target disk byte for byte against the source as it was when it
was quiesced -> roll ``db01`` back (measured) and check the source is as it was.

The source "at quiesce" is captured when failover reports ``source_quiesced``:
the simulated clients write through the network (a disconnected NIC stops
them) and stop when their hook says so, under the fake's lock, so nothing
can change the disk after that moment.  The result's exit code is 0 when
every step and verification passed (1 when a step warned); else the first
failed step's code (31 for a verification mismatch).

Before anything starts, the external tools the demo needs are looked for
(``openssl`` for the fake vCenter's certificate; with ``--boot`` QEMU, debugfs
and, when the guest is not cached, the guest build tools): a missing one is
exit 5 naming the tool and its package.

``--keep DIR`` keeps the lab in DIR, with a marker (``.scmt-demo.json``) that
says whether the demo there finished.  The demo does not continue where it
stopped (its fake vCenter lives in the process): a rerun over an unfinished
demo (interrupted, killed, failed) removes what it left and starts over; a
finished demo, or a directory with files of its own, is never overwritten.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scmt_cli.errors import ConfigError, ScmtError, UsageError, VerificationError
from scmt_cli.events import Reporter
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.workload import Workload, WriteRecord
from scmt_cli.state import StateStore

WORKLOAD_RATE = 512 * 1024
PAUSE_BETWEEN_SYNCS = 0.6
#: ``--keep DIR``: the marker that says a demo lives in DIR, and whether it finished.
MARKER = ".scmt-demo.json"
#: What a demo writes in DIR (and may remove to start over): its lab, the fake vCenter's files, its store.
_OWN = ("lab", "vcenter", "state.db", "state.db-wal", "state.db-shm", MARKER)
#: External tools of every demo: (tool, Debian package).
TOOLS = (("openssl", "openssl"),)
#: With --boot, besides the guest build tools (only when the guest image is not cached yet).
BOOT_TOOLS = (("qemu-system-x86_64", "qemu-system-x86"), ("debugfs", "e2fsprogs"))


class StepFailed(ScmtError):
    """A demo step failed with ``code`` (the code of what failed, e.g. 60 for a sync where some VMs failed)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def missing_tools(boot: bool) -> list[str]:
    """``tool (apt-get install package)`` for each external tool the demo needs that is not installed."""
    need = list(TOOLS) + (list(BOOT_TOOLS) if boot else [])
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in need
               if shutil.which(tool) is None and not (tool == "debugfs" and Path("/sbin/debugfs").exists())]
    if boot:
        from scmt_cli.lab.guest.build import missing_tools as guest_build_tools
        from scmt_cli.lab.guest.cache import cached_image

        if cached_image() is None:
            missing += guest_build_tools()
    return missing


@dataclass(frozen=True)
class DemoRequest:
    keep: Path | None = None
    boot: bool = False  # also migrate the real lab guest and boot it with QEMU (minutes, not seconds)


@dataclass
class DemoResult:
    lab_dir: str | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    vms: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    explore: list[str] = field(default_factory=list)
    boot: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return bool(self.verifications) and all(v["ok"] for v in self.verifications)

    @property
    def passed(self) -> bool:
        """Every step and verification passed (warnings aside: they make the exit code 1, not a failure)."""
        return all(s["ok"] for s in self.steps) and self.verified

    @property
    def exit_code(self) -> int:
        failed = [s for s in self.steps if not s["ok"]]
        if failed:
            return int(failed[0].get("error_code") or VerificationError.exit_code)
        if not self.verified:
            return VerificationError.exit_code
        return 1 if self.warnings else 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.passed, "lab_dir": self.lab_dir, "seconds": round(self.seconds, 2),
                "steps": self.steps, "verifications": self.verifications, "vms": self.vms,
                "explore": self.explore, "warnings": self.warnings,
                **({"boot": self.boot} if self.boot is not None else {})}


class _Gated(Workload):
    """A workload whose writes stop when ``gate()`` is false (checked under the fake's lock)."""

    gate: Callable[[], bool] = staticmethod(lambda: True)

    def write_once(self) -> WriteRecord | None:
        with self.estate.lock:
            if not self.gate():
                return None
            return super().write_once()


class _Tap:
    """Forwards to the CLI's reporter; captures the source's disks when a VM is quiesced."""

    def __init__(self, inner: Reporter, on_quiesce: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_quiesce = on_quiesce

    def log(self, level: Any, message: str, **fields: Any) -> None:
        self._inner.log(level, message, **fields)

    def progress(self, task: str, done: int, total: int | None, **fields: Any) -> None:
        self._inner.progress(task, done, total, **fields)

    def event(self, kind: str, **fields: Any) -> None:
        if kind == "source_quiesced":
            self._on_quiesce(str(fields["vm"]))
        self._inner.event(kind, **fields)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_digests(estate: FakeEstate, vm: str) -> dict[int, str]:
    """SHA-256 of each live disk of ``vm`` (taken under the fake's lock)."""
    with estate.lock:
        disks = estate.vm(vm).disks
        return {k: _digest(d.read(0, d.capacity)) for k, d in sorted(disks.items())}


class _Demo:
    def __init__(self, req: DemoRequest, reporter: Reporter) -> None:
        self.req = req
        self.rep = reporter
        self.quiesced: dict[str, dict[int, str]] = {}
        self.lock = threading.Lock()
        self.estate: FakeEstate | None = None
        self.result = DemoResult(None)
        self.guest: Any = None  # the lab guest's file workload (with --boot)
        self.guest_at_quiesce: str | None = None

    def step(self, name: str, fn: Callable[[], str]) -> bool:
        self.rep.log("info", f"== {name}")
        t0 = time.monotonic()
        code: int | None = None
        try:
            detail = fn()
            ok = True
        except Exception as exc:  # noqa: BLE001 - the demo reports every step, then stops
            detail = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            code = exc.exit_code if isinstance(exc, ScmtError) else 70
            ok = False
            self.rep.log("error", f"{name}: {detail}")
        self.result.steps.append({"step": name, "ok": ok, "seconds": round(time.monotonic() - t0, 2),
                                  "detail": detail, "error_code": code})
        return ok

    def on_quiesce(self, vm: str) -> None:
        assert self.estate is not None
        if self.guest is not None and vm == self.guest.vm:
            # conversion rewrites the guest's disk by design: what must survive is its data, as the guest sees it
            self.guest_at_quiesce = self.guest.digest()
            return
        self.quiesced[vm] = source_digests(self.estate, vm)

    def gate(self, vm: str) -> Callable[[], bool]:
        def open_() -> bool:
            assert self.estate is not None
            fvm = self.estate.vms[vm]
            return any(n.connected for n in fvm.nics) and \
                not (self.root / "lab" / f"stop-{vm}").exists()
        return open_

    def run(self) -> DemoResult:
        from scmt_cli.lab.vcenter import start_estate, stop_estate
        from scmt_cli.services.assess import AssessRequest, assess
        from scmt_cli.services.migration.context import open_context
        from scmt_cli.services.migration.failover import FailoverRequest, run_failover
        from scmt_cli.services.migration.rollback import RollbackRequest, run_rollback
        from scmt_cli.services.migration.status import StatusRequest, status_service
        from scmt_cli.services.migration.sync import SyncRequest, run_sync

        t_start = time.monotonic()
        missing = missing_tools(self.req.boot)
        if missing:  # exit 5 naming each tool and its package, before anything is built
            raise ConfigError(f"the demo needs tools that are not installed: {', '.join(missing)}")
        tmp = None
        if self.req.keep is not None:
            self.root = self.req.keep.absolute()
            self._claim(self.root)
        else:
            tmp = tempfile.mkdtemp(prefix="scmt-demo-")
            self.root = Path(tmp)
        self.result.lab_dir = str(self.root) if self.req.keep is not None else None
        workloads: list[Workload] = []
        store: StateStore | None = None
        ctx = None
        try:
            labdir = self.root / "lab"
            lab = demo_lab.write_lab(labdir, guest=self.req.boot)
            plan_path: Path | None = None
            vms = (*demo_lab.DEMO_VMS, demo_lab.GUEST_VM) if self.req.boot else demo_lab.DEMO_VMS

            def build() -> str:
                self.estate = start_estate(lab, self.root / "vcenter")
                for i, vm in enumerate(demo_lab.DEMO_VMS):
                    w = _Gated(self.estate, vm, rate=WORKLOAD_RATE, pattern="hotspot", seed=i + 1)
                    w.gate = self.gate(vm)
                    workloads.append(w.start())
                if self.req.boot:
                    from scmt_cli.lab.guestfiles import GuestFiles

                    self.guest = GuestFiles(self.estate, demo_lab.GUEST_VM, seed=5)
                return (f"fake vCenter {self.estate.base_url}/sdk with {len(vms)} VMs; "
                        f"a workload writes {WORKLOAD_RATE // 1024} KiB/s to each"
                        + (f", files inside {demo_lab.GUEST_VM}'s file system" if self.req.boot else ""))

            if self.req.boot:
                if not self.step("build the lab guest (cached after the first run)", self.build_guest):
                    return self.result

            def do_assess() -> str:
                res = assess(AssessRequest(inventory=lab, network=False, method="agentless"), self.rep)
                c = res.counts()
                return f"{c['vms']} VMs: {c['ready']} ready, {c['warnings']} with warnings, {c['blocked']} blocked"

            def write_plan() -> str:
                nonlocal plan_path
                assert self.estate is not None
                hooks = {vm: [[sys.executable, "-c", "import pathlib,sys; pathlib.Path(sys.argv[1]).touch()",
                               str(labdir / f"stop-{vm}")]] for vm in ("redis-a", "redis-b")}
                plan_path = demo_lab.write_plan(labdir, url=self.estate.base_url + "/sdk",
                                                thumbprint=self.estate.http.thumbprint, user=self.estate.lab.user,
                                                group_hooks=hooks, vms=vms)
                return f"{plan_path.name}: agentless, dir target, group 'redis' (source action none, stop hooks)"

            for name, fn in (("build the lab", build), ("assess", do_assess), ("write a plan", write_plan)):
                if not self.step(name, fn):
                    return self.result
            assert plan_path is not None and self.estate is not None
            store = StateStore.open(self.root / "state.db")
            tap = _Tap(self.rep, self.on_quiesce)
            ctx = open_context(plan_path, store, tap)

            def sync(label: str) -> Callable[[], str]:
                def go() -> str:
                    if self.guest is not None and label != "full copies":
                        self.guest.write_random(2)
                    res = run_sync(SyncRequest(plan_path), ctx)
                    if res.failed:
                        raise StepFailed(f"sync failed for {', '.join(res.failed)}", res.exit_code)
                    moved = sum(int(o.data.get("bytes_read", 0)) for o in res.last.values())
                    secs = max(float(o.data.get("seconds", 0)) for o in res.last.values())
                    self.result.warnings.extend(res.to_dict()["warnings"])
                    return f"{label}: read {moved / 2**20:.1f} MiB in {secs:.2f} s ({len(vms)} VMs, 2 at a time)"
                return go

            ok = self.step("sync: seed", sync("full copies"))
            for n in (1, 2):
                time.sleep(PAUSE_BETWEEN_SYNCS)
                ok = ok and self.step(f"sync: incremental {n}", sync("changed blocks only (CBT)"))
            if not ok:
                return self.result

            def failover(vms: tuple[str, ...], group: str | None) -> Callable[[], str]:
                def go() -> str:
                    res = run_failover(FailoverRequest(plan_path, vms=vms, group=group), ctx)
                    if res.failed:
                        raise StepFailed("; ".join(f"{o.vm}: {o.error}" for o in res.failed), res.exit_code)
                    self.result.warnings.extend(res.all_warnings())
                    return ", ".join(f"{o.vm} down {o.data.get('downtime_seconds', 0):.2f} s" for o in res.outcomes)
                return go

            self.step("failover db01 (disconnect the source's network)", failover(("db01",), None))
            self.step("failover group redis (hooks stop the service)", failover((), "redis"))
            self.step("verify target disks = source at quiesce", lambda: self.verify(ctx))

            def rollback() -> str:
                before = source_power(self.estate, "db01")  # type: ignore[arg-type]
                res = run_rollback(RollbackRequest(plan_path, vms=("db01",)), ctx)
                o = res.outcomes[0]
                after = source_power(self.estate, "db01")  # type: ignore[arg-type]
                target = ctx.platform.state(ctx.effective("db01").target_name)
                good = o.ok and after == ("poweredOn", True) and not target.network_connected \
                    and target.power == "shutoff"
                self.result.verifications.append({"check": "db01 rollback restored the source", "ok": good,
                                                  "source_before": list(before), "source_after": list(after),
                                                  "seconds": o.data.get("rollback_seconds")})
                if not good:
                    raise VerificationError(f"rollback left the source as {after} and the target "
                                            f"{target.to_dict()}")
                return f"db01 back on the source in {o.data['rollback_seconds']:.2f} s (network reconnected)"

            self.step("rollback db01", rollback)
            if self.req.boot:
                self.step(f"failover {demo_lab.GUEST_VM} (shut down, convert) and boot it",
                          lambda: self.boot_guest(plan_path, ctx))
            status = status_service(StatusRequest(plan_path), store, self.rep)
            self.result.vms = [{"vm": v.vm, "state": v.state, "downtime_seconds": v.measured_downtime_seconds,
                                "rollback_seconds": v.rollback_seconds, "last_sync": v.last_sync_kind}
                               for v in status.vms]
            if self.req.keep is not None:
                _mark(self.root, "finished" if all(st["ok"] for st in self.result.steps) else "failed")
                self.result.explore = [
                    f"scmt --state {self.root / 'state.db'} status {plan_path}",
                    f"cat {self.root / 'lab' / 'target' / 'db01' / 'domain.xml'}",
                    f"ls -ls {self.root / 'lab' / 'target'}/*/",
                ]
            return self.result
        finally:
            for w in workloads:
                w.stop()
            if ctx is not None:
                ctx.close()
            if store is not None:
                store.close()
            if self.estate is not None:
                stop_estate(self.estate)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            self.result.seconds = time.monotonic() - t_start

    def _claim(self, root: Path) -> None:
        """Make ``root`` the demo's: new, empty, or an unfinished demo's (removed first); else UsageError."""
        import json
        import os

        from scmt_cli.state.locks import pid_alive

        again = f"scmt demo --keep {root}-2"
        if root.exists() and any(root.iterdir()):
            try:
                marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                marker = None
            others = sorted(p.name for p in root.iterdir() if p.name not in _OWN)
            if not isinstance(marker, dict) or others:
                raise UsageError(f"--keep {root}: the directory is not empty and holds no unfinished demo",
                                 hint=f"name a new directory, e.g. '{again}'")
            if marker.get("status") == "finished":
                raise UsageError(f"--keep {root}: a finished demo is kept there",
                                 hint=f"explore it, or name a new directory, e.g. '{again}' (or remove this one "
                                      "first)")
            pid = marker.get("pid")
            if marker.get("status") == "running" and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
                raise UsageError(f"--keep {root}: a demo is running there now (process {pid})",
                                 hint=f"wait for it to end, or name a new directory, e.g. '{again}'")
            self.rep.log("info", f"{root} holds an unfinished demo (interrupted or failed): starting it over")
            for name in _OWN:
                path = root / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        _mark(root, "running")

    def build_guest(self) -> str:
        from scmt_cli.lab.guest import ensure_image

        img = ensure_image(progress=lambda m: self.rep.log("info", m))
        built = f"built in {img.info['total_s']} s" if "total_s" in img.info else "from the cache"
        return (f"Debian guest {img.path} ({built}; {img.allocated / 2**20:.0f} MiB allocated of "
                f"{img.size / 2**20:.0f} MiB)")

    def boot_guest(self, plan_path: Path, ctx: Any) -> str:
        """Fail the lab guest over (source shut down; converted when virt-v2v is installed, else a direct
        failover on SATA), boot it with QEMU and compare what the guest prints with its data at quiesce."""
        import os

        from scmt_cli.services.migration.boot import BootRequest, run_boot
        from scmt_cli.services.migration.failover import FailoverRequest, run_failover
        from scmt_cli.targets.qemu import kvm_usable

        vm = demo_lab.GUEST_VM
        self.guest.write_random(1)  # reaches the target only through the final sync
        direct = shutil.which(ctx.platform.spec.v2v_command) is None
        saved = {k: os.environ.get(k) for k in ("LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS")}
        if not direct and not kvm_usable()[0]:  # libguestfs would pick a KVM that hangs (see kvm_usable)
            os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
            os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        try:
            res = run_failover(FailoverRequest(plan_path, vms=(vm,), source_action="shutdown", direct=direct), ctx)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if res.failed:
            raise StepFailed("; ".join(f"{o.vm}: {o.error}" for o in res.failed), res.exit_code)
        self.result.warnings.extend(res.all_warnings())
        conv = res.outcomes[0].data.get("conversion") or {}
        booted = run_boot(BootRequest(plan_path, vm, expect=self.guest_at_quiesce), ctx)
        out = booted.outcome
        assert out is not None
        self.result.warnings.extend(booted.warnings)
        self.result.boot = {"vm": vm, "booted": out.booted, "seconds": out.seconds, "accel": out.accel,
                            "guest_line": out.ready_line, "data_verified": booted.data_verified,
                            "expected": self.guest_at_quiesce, "converted": bool(conv.get("ran")),
                            "console_log": out.console_log if self.req.keep is not None else None}
        self.result.verifications.append({"check": f"{vm} boots on QEMU and sees its data of quiesce", "vm": vm,
                                          "ok": booted.data_verified is True, "guest_line": out.ready_line,
                                          "expected": self.guest_at_quiesce})
        if booted.data_verified is not True:
            raise VerificationError(f"{vm}: the guest reports {out.guest_value}, expected {self.guest_at_quiesce}")
        how = "converted by virt-v2v-in-place" if conv.get("ran") else "not converted (direct failover, SATA)"
        return f"{vm} {how}, booted in {out.seconds:.1f} s ({out.accel}); the guest says: {out.ready_line}"

    def verify(self, ctx: Any) -> str:
        checked = 0
        for vm, digests in sorted(self.quiesced.items()):
            target = ctx.effective(vm).target_name
            folder = Path(ctx.platform.vm_dir(target))
            for index, (key, want) in enumerate(sorted(digests.items())):
                path = folder / f"disk{index}.raw"
                got = _digest(path.read_bytes()) if path.exists() else None
                ok = got == want
                self.result.verifications.append({"check": f"{vm} disk {key} byte-identical", "vm": vm,
                                                  "disk": key, "ok": ok, "source_sha256": want,
                                                  "target_sha256": got})
                checked += 1
        bad = [v for v in self.result.verifications if not v["ok"]]
        if bad:
            raise VerificationError(f"{len(bad)} target disk(s) differ from the source at quiesce")
        return f"{checked} disks of {len(self.quiesced)} VMs identical (SHA-256 of every byte)"


def _mark(root: Path, status: str) -> None:
    import json
    import os

    tmp = root / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"status": status, "pid": os.getpid(), "at": time.time()}) + "\n", encoding="utf-8")
    tmp.replace(root / MARKER)


def source_power(estate: FakeEstate, vm: str) -> tuple[str, bool]:
    with estate.lock:
        fvm = estate.vm(vm)
        return fvm.power, any(n.connected for n in fvm.nics)


def run_demo(req: DemoRequest, reporter: Reporter) -> DemoResult:
    """Run the demo (see the module doc); never raises for a failed step (the result says)."""
    return _Demo(req, reporter).run()
