"""An HVM domain: the guest owns ring 0 and QEMU's emulated PC; no shim
runs under it.  Boot phases (kvmtool style, a failure names its phase):
build (RAM, vCPU block, guest image, boot info), launch (QEMU with
hvmloader as its firmware), qmp, console.  The rest of the life cycle
matches the PV Domain (qemu_xenpv/domain.py) so the daemon and the CLI
drive both alike: a guest power-off, reset or panic arrives as a QMP
event with the VM paused, and on_poweroff/on_reboot/on_crash decide.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Callable, List, Optional

from ..errors import XenPVError
from . import layout
from .builder import build_hvm

log = logging.getLogger("qemu_xenpv.hvm.domain")

RUNNING, PAUSED, SHUTDOWN, CRASHED, DYING, DEAD = "running", "paused", "shutdown", "crashed", "dying", "dead"

# QMP SHUTDOWN reasons (with -action reboot=shutdown) -> Xen's shutdown codes
SHUTDOWN_REASONS = {"guest-shutdown": "poweroff", "guest-reset": "reboot",
                    "guest-panic": "crash", "subsystem-reset": "reboot"}


def _forward_destroy(old, new) -> None:
    """hv.on_domain_restart: a destroy that came while `old` was rebooting
    applies to the domain that replaced it."""
    if getattr(old, "_destroy_pending", False):
        old.hv.loop.create_task(new.destroy("destroyed"))


class HVMDomain:
    is_hvm = True

    def __init__(self, hv, domid: int, config, accel: str, doorbell: str = "ivshmem",
                 gdb_port: Optional[int] = None, gdb_wait: bool = False,
                 trace_path: Optional[str] = None, scramble_p2m: bool = False):
        self.hv = hv
        self.domid = domid
        self.config = config
        self.name = config.name
        self.accel = accel
        self.doorbell = doorbell
        self.gdb_port = gdb_port
        self.gdb_wait = gdb_wait
        self.scramble_p2m = False           # no p2m: the guest sees machine memory
        self.uuid = config.uuid or uuid.uuid4()
        self.state = DYING
        self.end_reason: Optional[str] = None
        self.end_detail = ""
        self.crash_report: List[str] = []
        self.ram = None
        self.machine = None
        self.console = None
        self.console_port: Optional[int] = None
        self.build_info = None
        self.created = time.time()
        self.boot_t0 = 0.0
        self.vcpus = []                     # HVMVcpu: what event channels see
        self.pv = None                      # PV drivers for HVM guests (pv.py)
        self.gnttab = None                  # their grant table (pv.setup_grant_table)
        self.devices = None                 # PV back ends (devices/xenbus.py DeviceSet)
        self.shared_info_pa = 0
        self.store_evtchn = self.console_evtchn = 0
        from ..hypercall import Tracer
        self.tracer = Tracer(trace_path) if trace_path else None
        self._logged_once = set()
        self._end_waiters: List[asyncio.Future] = []
        self.on_end: List[Callable[["HVMDomain"], None]] = []
        self._tasks: List[asyncio.Task] = []
        self._restarting = False
        self._destroy_pending = False
        # Without PV drivers every port stays free: another domain that
        # names this one in an event-channel operation gets Xen's errors.
        from ..evtchn import EventChannels
        self.evtchn = EventChannels(hv, self)

    @property
    def alive(self) -> bool:
        return self.state in (RUNNING, PAUSED)

    def log(self, msg: str) -> None:
        self.hv.dmesg(f"(d{self.domid}) {msg}")

    def log_once(self, key: str, msg: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            self.hv.dmesg(f"(XEN) d{self.domid}: {msg}")

    # ---- what the PV hypercall families expect of a domain ----
    pae = True
    features = None                         # set from pv.HVM_FEATURES

    @property
    def mode(self):
        from .pv import HVMMode
        return HVMMode

    def guest_console_write(self, data: bytes) -> None:
        self.hv.guest_console_io(self, data)

    def copy_from_guest(self, vcpu, va: int, n: int):
        if n < 0 or n > 1 << 20:
            return None
        return self.pv.copy(vcpu, va, n)

    def copy_to_guest(self, vcpu, va: int, data: bytes) -> bool:
        return bool(self.pv.copy(vcpu, va, len(data), data))

    def publish_wallclock(self) -> None:
        """shared_info's wall clock: an HVM guest keeps its own system time
        (TSC, PIT, RTC), so wc is the wall time now."""
        from .. import abi
        si, ram = self.shared_info_pa, self.ram
        wall = time.time_ns()
        ver = ram.r32(si + abi.SI_WC_VERSION)
        ram.w32(si + abi.SI_WC_VERSION, (ver | 1) + 0)
        ram.w32(si + abi.SI_WC_SEC, (wall // 1_000_000_000) & 0xFFFFFFFF)
        ram.w32(si + abi.SI_WC_NSEC, wall % 1_000_000_000)
        ram.w32(si + abi.SI_WC_SEC_HI, (wall // 1_000_000_000) >> 32)
        ram.w32(si + abi.SI_WC_VERSION, (ver | 1) + 1)

    def pv_shutdown(self, reason: str) -> None:
        """SCHEDOP_shutdown from the hypercall page (on the loop)."""
        if not self.alive:
            return
        if self.machine is not None and reason in ("poweroff", "reboot", "crash", "suspend"):
            self.hv.loop.create_task(self._stop_vm())
        detail = "SCHEDOP_shutdown" + (" (crash)" if reason == "crash" else "")
        self._guest_stopped(reason if reason != "suspend" else "poweroff", detail)

    async def _stop_vm(self) -> None:
        try:
            await self.machine.pause()
        except Exception:
            pass

    def crash_from_hypercall(self, reason: str) -> None:
        self._guest_stopped("crash", reason)

    # ---- build and boot ----
    def build(self) -> None:
        from qemu_xenpv.machine.ram import GuestRAM
        cfg = self.config
        self.ram = GuestRAM(cfg.memory << 20, f"qemu-xenpv-hvm-d{self.domid}")
        self.build_info = build_hvm(cfg, self.ram)
        from .pv import HVM_FEATURES, HVMVcpu, PVDrivers
        self.features = HVM_FEATURES
        self.pv = PVDrivers(self)
        self.vcpus = [HVMVcpu(self.pv, i) for i in range(cfg.vcpus)]
        self.pv.setup()
        b = self.build_info
        self.hv.dmesg(f"(XEN) d{self.domid}: HVM build: {cfg.memory} MiB, {cfg.vcpus} vCPU(s), "
                      f"vCPU block {b.vcpu_magic:#010x}/{b.vcpu_count} at {layout.VCPU_BLOCK:#x}, "
                      f"boot {layout.BOOT_KIND_NAMES[b.kind]}")
        for note in b.notes:
            self.hv.dmesg(f"(XEN) d{self.domid}: {note}")

    async def start(self) -> None:
        from qemu_xenpv.machine.hvm import HVMMachine
        from .console import SerialConsole
        phase = "build"
        try:
            self.build()
            phase = "launch"
            self.machine = HVMMachine(self.ram, self.config.firmware, self.name,
                                      vcpus=self.config.vcpus, accel=self.accel,
                                      gdb_port=self.gdb_port, gdb_wait=self.gdb_wait,
                                      extra_args=self.pv.qemu_args(),
                                      extra_fds=self.pv.pass_fds())
            self.console = SerialConsole(self, self.machine.com1_ours)
            self.state = RUNNING
            self.boot_t0 = time.monotonic()
            self.machine.launch()
            self.pv.after_launch()
            self.console.connect()
            phase = "pv"
            with self.hv.lock:
                self.pv.connect_console(self.console.emit)
            xs = getattr(self.hv, "xenstore", None)
            if xs is not None:
                xs.domain_created(self)
                self._xenstore = xs
                with self.hv.lock:
                    xs.store.write(f"/libxl/{self.domid}/type", "hvm")
                from qemu_xenpv.devices.xenbus import DeviceSet
                self.devices = DeviceSet(self)
                self.devices.create_configured()    # disks, vifs: PV back ends
            phase = "qmp"
            try:
                await self.machine.connect_qmp()
            except Exception:
                if not self.machine.alive():
                    raise self.machine.failure() from None
                raise
            from qemu.qmp import EventListener
            listener = EventListener(("SHUTDOWN", "GUEST_PANICKED"))
            self.machine.qmp.register_listener(listener)
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._watch_events(listener)),
                           loop.create_task(self._watch_process())]
            if not self.gdb_wait:
                phase = "run"
                await self.machine.resume()
        except XenPVError:
            await self._teardown()
            raise
        except Exception as e:
            await self._teardown()
            log.exception("domain %s: phase %s failed", self.name, phase)
            raise XenPVError(f"domain '{self.name}': {phase} failed: {e}") from None

    async def _watch_events(self, listener) -> None:
        qmp = self.machine.qmp
        try:
            async for ev in listener:
                data = ev.get("data", {})
                if ev["event"] == "GUEST_PANICKED":
                    self._guest_stopped("crash", "the guest signalled a panic (pvpanic)")
                elif data.get("guest"):
                    reason = SHUTDOWN_REASONS.get(data.get("reason"), "poweroff")
                    self._guest_stopped(reason, data.get("reason", ""))
        except asyncio.CancelledError:
            pass
        finally:
            try:
                qmp.remove_listener(listener)
            except Exception:
                pass

    async def _watch_process(self) -> None:
        proc = self.machine.proc
        while proc.poll() is None:
            await asyncio.sleep(0.1)
        if self.alive:
            err = self.machine.failure()
            self.log(f"QEMU died: {err}")
            self.end("qemu-died", str(err))
            await self.destroy()

    def _guest_stopped(self, reason: str, detail: str) -> None:
        if not self.alive:
            return
        self.log(f"shutdown: {reason}" + (f" ({detail})" if detail else ""))
        if reason == "crash":
            self.crash_report = [f"domain_crash: d{self.domid} ({self.name}): {detail}"]
            for line in self.crash_report:
                self.hv.dmesg(f"(XEN) {line}")
        self.end(reason, detail if reason == "crash" else "")
        if self._console_may_still_attach():
            self.hv.loop.create_task(self._after_console_grace(reason))
        else:
            self._after_shutdown(reason)

    # `create -c` attaches its console in a second request; a guest that
    # ends within milliseconds (the firmware tests do) would be gone by
    # then.  The VM is paused at this point, so waiting costs nothing.
    CONSOLE_GRACE = 3.0

    def _console_may_still_attach(self) -> bool:
        c = self.console
        return (c is not None and c.sinks_added < 2 and
                time.monotonic() - self.boot_t0 < self.CONSOLE_GRACE)

    async def _after_console_grace(self, reason: str) -> None:
        attached = asyncio.Event()
        self.console.on_attach = attached.set
        try:
            await asyncio.wait_for(attached.wait(),
                                   max(0.0, self.CONSOLE_GRACE - (time.monotonic() - self.boot_t0)))
        except asyncio.TimeoutError:
            pass
        finally:
            if self.console is not None:
                self.console.on_attach = None
        await asyncio.sleep(0)                      # let the client's replay go out first
        if self.state in (SHUTDOWN, CRASHED):
            self._after_shutdown(reason)

    def end(self, reason: str, detail: str = "") -> None:
        self.state = CRASHED if reason == "crash" else SHUTDOWN
        self.end_reason = reason
        self.end_detail = detail

    def _after_shutdown(self, reason: str) -> None:
        action = {"poweroff": self.config.on_poweroff, "reboot": self.config.on_reboot,
                  "crash": self.config.on_crash}.get(reason, "destroy")
        if action == "preserve":
            self.log(f"{reason}: preserved (use 'qemu-xenpv destroy {self.name}')")
            self._notify_end()
        elif action in ("restart", "rename-restart", "coredump-restart") and reason != "crash" \
                or action in ("restart", "coredump-restart") and reason == "crash":
            self._restarting = True
            if _forward_destroy not in self.hv.on_domain_restart:
                self.hv.on_domain_restart.append(_forward_destroy)
            self.hv.loop.create_task(self.hv.restart_domain(self))
        else:
            self.hv.loop.create_task(self.destroy())

    async def destroy(self, reason: Optional[str] = None) -> None:
        if self.state == DEAD:
            if self._restarting:
                # destroyed while rebooting: destroy what replaces us
                succ = self.hv.domains.get(self.domid)
                if succ is not None and succ is not self:
                    await succ.destroy(reason)
                else:
                    self._destroy_pending = True
            return
        if self.state not in (SHUTDOWN, CRASHED):
            self.end(reason or "destroyed")
        await self._teardown()
        self._notify_end()

    async def _teardown(self) -> None:
        cur = asyncio.current_task()
        for t in self._tasks:
            if t is not cur and not t.done():
                t.cancel()
        if self.console is not None:
            self.console.disconnect()
        if self.pv is not None:
            self.pv.stop()
        if self.machine is not None:
            try:
                await self.machine.close()
            except Exception:
                self.machine.cleanup()
        if self.devices is not None:            # back ends finish, images closed
            devices, self.devices = self.devices, None
            await devices.shutdown()
        self._release_plumbing()
        if self.ram is not None:
            self.ram.close()
            self.ram = None
        if self.tracer is not None:
            self.tracer.close()
            self.tracer = None
        self.state = DEAD

    def _release_plumbing(self) -> None:
        """XenStore tree and ring, grant mappings, event channels: before
        the RAM goes (as the PV Domain does)."""
        hv = self.hv
        xs = getattr(self, "_xenstore", None)
        if xs is not None:
            self._xenstore = None
            try:
                xs.domain_destroyed(self)
            except Exception:
                log.exception("d%d: xenstore release", self.domid)
        with hv.lock:
            grants = getattr(hv, "grants", None)
            if grants is not None:
                try:
                    grants.domain_destroyed(self.domid)
                except Exception:
                    log.exception("d%d: grant release", self.domid)
            try:
                self.evtchn.reset()
            except Exception:
                log.exception("d%d: event channel reset", self.domid)

    def _notify_end(self) -> None:
        for fut in self._end_waiters:
            if not fut.done():
                fut.set_result(self.end_reason)
        self._end_waiters.clear()
        for fn in list(self.on_end):
            try:
                fn(self)
            except Exception:
                log.exception("on_end callback")
        self.hv.domain_ended(self)

    async def wait(self) -> str:
        action = {"poweroff": self.config.on_poweroff, "reboot": self.config.on_reboot,
                  "crash": self.config.on_crash}.get(self.end_reason or "", "destroy")
        if self.state == DEAD or (self.end_reason and action == "preserve"):
            return self.end_reason or "destroyed"
        fut = asyncio.get_running_loop().create_future()
        self._end_waiters.append(fut)
        return await fut

    # ---- control requests ----
    async def request_shutdown(self, reason: str, wait: bool = False,
                               timeout: Optional[float] = None) -> dict:
        """An HVM guest without PV drivers hears the ACPI power button (poweroff)
        or nothing (reboot needs the PV control interface).  `timeout` is
        accepted as for PV domains (`shutdown --timeout`), but the power
        button has no acknowledgement to wait for, so it is not used."""
        if not self.alive:
            raise XenPVError(f"domain '{self.name}' is not running")
        if reason != "poweroff":
            raise XenPVError(f"domain '{self.name}': HVM reboot requests need PV drivers "
                             "(XenStore control/shutdown), which this guest does not have")
        await self.machine.command("system_powerdown")
        if wait:
            await self.wait()
        return {"ok": True, "message": f"sent the ACPI power button to '{self.name}'"}

    async def request_sysrq(self, key: str) -> dict:
        raise XenPVError(f"domain '{self.name}': sysrq needs PV drivers (XenStore "
                         "control/sysrq); an HVM guest has its serial console")

    # ---- information ----
    def boot_status(self) -> dict:
        """hvmloader's view, read back from the boot info it completed."""
        if self.ram is None:
            return {}
        return layout.unpack_boot_info(self.ram.read(layout.BOOT_INFO, layout.BOOT_INFO_SIZE))

    def state_flags(self) -> str:
        f = ["-"] * 6
        if self.state == RUNNING:
            f[0] = "r"
        if self.state == PAUSED:
            f[2] = "p"
        if self.state == SHUTDOWN:
            f[3] = "s"
        if self.state == CRASHED:
            f[4] = "c"
        if self.state in (DYING, DEAD):
            f[5] = "d"
        return "".join(f)

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.machine.proc.pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except Exception:
            return 0.0

    def info(self) -> dict:
        return {"name": self.name, "domid": self.domid, "memory": self.config.memory,
                "vcpus": self.config.vcpus, "state": self.state, "flags": self.state_flags(),
                "time": round(self.cpu_seconds(), 1), "console_port": self.console_port,
                "accel": self.accel, "gdb_port": self.gdb_port, "type": "hvm",
                "end_reason": self.end_reason, "kernel": self.config.kernel}
