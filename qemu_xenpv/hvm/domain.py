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
        self.vcpus = [None] * config.vcpus  # len() is what `list` shows
        self._end_waiters: List[asyncio.Future] = []
        self.on_end: List[Callable[["HVMDomain"], None]] = []
        self._tasks: List[asyncio.Task] = []
        # Without PV drivers every port stays free: another domain that
        # names this one in an event-channel operation gets Xen's errors.
        from ..evtchn import EventChannels
        self.evtchn = EventChannels(hv, self)

    @property
    def alive(self) -> bool:
        return self.state in (RUNNING, PAUSED)

    def log(self, msg: str) -> None:
        self.hv.dmesg(f"(d{self.domid}) {msg}")

    # ---- build and boot ----
    def build(self) -> None:
        from qemu_xenpv.machine.ram import GuestRAM
        cfg = self.config
        self.ram = GuestRAM(cfg.memory << 20, f"qemu-xenpv-hvm-d{self.domid}")
        self.build_info = build_hvm(cfg, self.ram)
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
                                      gdb_port=self.gdb_port, gdb_wait=self.gdb_wait)
            self.console = SerialConsole(self, self.machine.com1_ours)
            self.state = RUNNING
            self.boot_t0 = time.monotonic()
            self.machine.launch()
            self.console.connect()
            phase = "qmp"
            try:
                await self.machine.connect_qmp()
            except Exception:
                if not self.machine.alive():
                    raise self.machine.failure() from None
                raise
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._watch_events()),
                           loop.create_task(self._watch_process())]
        except XenPVError:
            await self._teardown()
            raise
        except Exception as e:
            await self._teardown()
            log.exception("domain %s: phase %s failed", self.name, phase)
            raise XenPVError(f"domain '{self.name}': {phase} failed: {e}") from None

    async def _watch_events(self) -> None:
        from qemu.qmp import EventListener
        listener = EventListener(("SHUTDOWN", "GUEST_PANICKED"))
        qmp = self.machine.qmp
        qmp.register_listener(listener)
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
            self.hv.loop.create_task(self.hv.restart_domain(self))
        else:
            self.hv.loop.create_task(self.destroy())

    async def destroy(self, reason: Optional[str] = None) -> None:
        if self.state == DEAD:
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
        if self.machine is not None:
            try:
                await self.machine.close()
            except Exception:
                self.machine.cleanup()
        if self.ram is not None:
            self.ram.close()
            self.ram = None
        self.state = DEAD

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
        if self.state == DEAD or (self.end_reason and self.config.on_crash == "preserve"):
            return self.end_reason or "destroyed"
        fut = asyncio.get_running_loop().create_future()
        self._end_waiters.append(fut)
        return await fut

    # ---- control requests ----
    async def request_shutdown(self, reason: str, wait: bool = False) -> dict:
        """An HVM guest without PV drivers hears the ACPI power button (poweroff)
        or nothing (reboot needs the PV control interface)."""
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
