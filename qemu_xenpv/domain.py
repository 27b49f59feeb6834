"""A domain: its machine (QEMU + RAM), its vCPUs, its event channels and
console, and its life: build -> run -> shut down / crash -> destroy or
restart.  Boot runs as named phases so a failure says which one failed
(kvmtool style)."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional

from . import abi, builder
from .builder import BuildSpec
from .errors import XenPVError, MachineError
from .evtchn import EventChannels
from .mm import PagingMode
from .shim import K, ShimImage, Mailbox
from .vcpu import VCPU
from .hypercall import Tracer
from . import paths

log = logging.getLogger("qemu_xenpv.domain")

RUNNING, PAUSED, SHUTDOWN, CRASHED, DYING, DEAD = "running", "paused", "shutdown", "crashed", "dying", "dead"

# How each end of a guest's life maps to a process exit status for `create -c`
GRANT_FRAMES_MAX = 4            # grant-table frames a domain may grow to (Mini-OS asks 4)
FLUSH_WAIT = 2.0                # a remote TLB flush waits this long for the other vCPUs (s)
FLUSH_POLL = 0.00002            # ... looking this often
SHUTDOWN_ACK_TIMEOUT = 60.0     # xl waits this long for the guest to clear control/shutdown

EXIT_CODES = {"poweroff": 0, "reboot": 0, "suspend": 0, "crash": 2, "watchdog": 3,
              "soft_reset": 0, "destroyed": 4, "qemu-died": 5}


class Domain:
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
        self.scramble_p2m = scramble_p2m or config.scramble_p2m
        self.uuid = config.uuid or uuid.uuid4()
        self.tracer = Tracer(trace_path) if trace_path else None
        self.state = DYING
        self.end_reason: Optional[str] = None
        self.shutdown_code: Optional[int] = None
        self.crash_report: List[str] = []
        self.vm_assist = 0
        self.features = builder.SUPPORTED_FEATURES
        self.vcpus: List[VCPU] = []
        self.ram = None
        self.machine = None
        self.console = None
        self.devices = None             # PV back ends (devices/xenbus.py DeviceSet)
        self.console_port: Optional[int] = None
        self.created = time.time()
        self.boot_t0 = 0.0
        self._logged_once = set()
        self._end_waiters: List[asyncio.Future] = []
        self.on_end: List[Callable[["Domain"], None]] = []
        self.evtchn = EventChannels(hv, self)
        self.native = None
        self._starting = True           # start() is running: an end waits for it
        self._deferred_end: Optional[str] = None

    # ---- properties used by the hypercall families ----
    @property
    def alive(self) -> bool:
        return self.state in (RUNNING, PAUSED)

    @property
    def pae(self) -> bool:
        return self.mode.pae

    # ---- logging ----
    def log(self, msg: str) -> None:
        self.hv.dmesg(f"(d{self.domid}) {msg}")

    def log_once(self, key: str, msg: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            self.hv.dmesg(f"(XEN) d{self.domid}: {msg}")

    def guest_console_write(self, data: bytes) -> None:
        self.hv.guest_console_io(self, data)

    # ---- build and boot ----
    def build(self) -> None:
        """Phase 'build': lay out the machine and the guest in fresh RAM."""
        from qemu_xenpv.machine.ram import GuestRAM
        from qemu_xenpv.machine import native
        cfg = self.config
        self.native = native.lib()
        img = cfg.kernel_image
        self.mode = PagingMode(img.is_pae)
        spec = BuildSpec(kernel=img, memory_mb=cfg.memory, vcpus=cfg.vcpus, cmdline=cfg.cmdline,
                         ramdisk=cfg.ramdisk_bytes, scramble_p2m=self.scramble_p2m,
                         maxmem_mb=cfg.maxmem)
        shim = self.hv.shim_image()
        ram, built = builder.build_pv(spec, shim, self.domid,
                                      lambda size: GuestRAM(size, f"qemu-xenpv-d{self.domid}"))
        self.ram = ram
        self.built = built
        self.mem = built.mem
        self.mmu = built.mmu
        self.nr_pages = built.nr_pages
        self.max_pages = max(cfg.maxmem * 256 if cfg.maxmem else 0, built.nr_pages)
        self.free_mfns = list(built.free_mfns)      # balloon room
        self.shared_info_pa = built.shared_info_mfn << 12
        self.mmu.on_entry_written = self._table_entry_written

        # event channels the toolstack makes: xenstore and console, remote dom0
        assert self.evtchn.alloc_unbound(0) == spec.store_evtchn
        assert self.evtchn.alloc_unbound(0) == spec.console_evtchn

        self.vcpus = [VCPU(self, i, built.mem.vcpus[i]) for i in range(cfg.vcpus)]
        v0 = self.vcpus[0]
        rc = v0.new_baseptr(built.l3_mfn)
        if rc:
            raise AssertionError(f"initial base pointer refused: {rc}")
        self._init_shim(shim, built)
        from qemu_xenpv.devices.console import ConsoleBackend
        self.console = ConsoleBackend(self, built.console_mfn, spec.console_evtchn)
        self.store_evtchn, self.console_evtchn = spec.store_evtchn, spec.console_evtchn
        self._setup_grant_table(built)

    def _init_shim(self, shim: ShimImage, built) -> None:
        ram = self.ram
        mem = built.mem
        boot = shim.phys("shim_boot")
        self.boot_pa = boot
        from .shim import shim_boot
        fields = {
            "magic": K.BOOT_MAGIC, "abi_version": K.ABI_VERSION,
            "flags": K.BOOT_PAE if self.pae else 0, "cr3": mem.shim_cr3,
            "nr_vcpus": len(self.vcpus),
            "doorbell": {"ivshmem": K.DOORBELL_IVSHMEM, "port": K.DOORBELL_PORT,
                         "poll": K.DOORBELL_NONE}[self.doorbell],
            "doorbell_port": 0x402,
            "ivshmem_bar0": 0xFE000000, "ivshmem_bar1": 0xFE001000, "ivshmem_bar2": 0xFE100000,
            "ivshmem_peer": 0, "spin_loops": 20000, "mem_top": ram.size,
            "vcpu": [v.priv for v in mem.vcpus], "pstack": [v.pstack + 8192 for v in mem.vcpus],
            "panic": b"",
        }
        ram.write(boot, shim_boot.pack(fields))
        for v in self.vcpus:
            mb = v.mbox
            mb.set("vcpu_id", v.vid)
            mb.set("mbox", K.ESTACK_BASE + v.vid * K.ESTACK_STRIDE)
            mb.set("hole_start", self.mode.hole_start)
            mb.set("vcpu_info_pa", v.vcpu_info_pa)
            v.map_vinfo()
            mb.set("evtchn_pending_pa", self.shared_info_pa)
            mb.set("gdt_limit", K.GDT_LIMIT)
            mb.set64("periodic_ns", 10_000_000)         # Xen's PV default: 10 ms
        regs = {"eip": built.entry, "cs": abi.FLAT_KERNEL_CS, "eflags": 0x200,
                "esp": built.stack_top, "ss": abi.FLAT_KERNEL_SS, "esi": built.start_info_va,
                "ds": abi.FLAT_KERNEL_DS, "es": abi.FLAT_KERNEL_DS, "fs": abi.FLAT_KERNEL_DS,
                "gs": abi.FLAT_KERNEL_DS}
        v0 = self.vcpus[0]
        v0.mbox.write_regs(regs)
        v0.mbox.set("kernel_ss", abi.FLAT_KERNEL_SS)
        v0.mbox.set("kernel_sp", built.stack_top)
        if self.pae:
            self.vm_assist |= 1 << 3                    # pae_extended_cr3
        self.sync_fast_paths()

    def sync_fast_paths(self) -> None:
        """Tell every vCPU's shim which cases it may answer itself."""
        for v in self.vcpus:
            v.sync_fast_paths()

    def now_ns(self, tsc: int) -> int:
        """System time at guest TSC `tsc`, from the shim's published anchor."""
        from .shim import shim_boot
        boot = self.boot_pa
        off = shim_boot.offsets
        ram = self.ram
        for _ in range(100):
            ver = ram.r32(boot + off["time_version"])
            a_tsc, a_ns = ram.r64(boot + off["anchor_tsc"]), ram.r64(boot + off["anchor_ns"])
            mul, shift = ram.r32(boot + off["tsc_mul"]), ram.r32(boot + off["tsc_shift"])
            if not ver & 1 and ram.r32(boot + off["time_version"]) == ver:
                break
        if shift & 0x80000000:
            shift -= 1 << 32
        delta = (tsc - a_tsc) & 0xFFFFFFFFFFFFFFFF
        if delta >> 63:
            return a_ns
        delta = delta >> -shift if shift < 0 else delta << shift
        return a_ns + ((delta * mul) >> 32)

    def shim_panic_message(self) -> str:
        from .shim import shim_boot
        boot = self.hv.shim_image().phys("shim_boot")
        raw = self.ram.read(boot + shim_boot.offsets["panic"], 160)
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    async def start(self) -> None:
        """Phases: build, launch, qmp, vcpus, console."""
        from qemu_xenpv.machine.qemu import QemuMachine
        phase = "build"
        try:
            self.build()
            phase = "launch"
            self.machine = QemuMachine(self.ram, str(paths.rom_bin()), f"{self.name}",
                                       accel=self.accel, vectors=len(self.vcpus),
                                       doorbell=self.doorbell, gdb_port=self.gdb_port,
                                       gdb_wait=self.gdb_wait, smp=len(self.vcpus))
            self.state = RUNNING
            self.console.connect()
            self._xenstore_introduce()
            from qemu_xenpv.devices.xenbus import DeviceSet
            self.devices = DeviceSet(self)
            self.devices.create_configured()        # disks, vifs: before the guest runs
            for v in self.vcpus[:1]:
                v.start()
            self.boot_t0 = time.monotonic()
            self.machine.launch()
            phase = "qmp"
            try:
                await self.machine.connect_qmp()
            except Exception:
                if not self.machine.alive():
                    raise self.machine.failure() from None
                raise
            self._watch_task = self.hv.loop.create_task(self._watch_process())
        except XenPVError:
            self._deferred_end = None
            await self._teardown()
            raise
        except Exception as e:
            self._deferred_end = None
            await self._teardown()
            log.exception("domain %s: phase %s failed", self.name, phase)
            raise XenPVError(f"domain '{self.name}': {phase} failed: {e}") from None
        finally:
            self._starting = False
        # A guest may end within milliseconds, before QMP is even connected:
        # what its end sets off (teardown, restart) waits until start is over.
        if self._deferred_end is not None:
            reason, self._deferred_end = self._deferred_end, None
            self._after_shutdown(reason)

    async def _watch_process(self) -> None:
        proc = self.machine.proc
        while proc.poll() is None:
            await asyncio.sleep(0.1)
        if self.alive:
            err = self.machine.failure()
            self.log(f"QEMU died: {err}")
            self.end("qemu-died", str(err))
            await self.destroy()

    def on_vcpu_boot(self, v: VCPU) -> None:
        """The shim initialised this vCPU: publish the wall clock."""
        from .shim import shim_boot
        boot = self.hv.shim_image().phys("shim_boot")
        b = shim_boot.unpack(self.ram.mm, boot)
        self.tsc_khz = b["tsc_khz"]
        now_ns = v.now()
        wall = time.time_ns() - now_ns
        si = self.shared_info_pa
        ram = self.ram
        ver = ram.r32(si + abi.SI_WC_VERSION)
        ram.w32(si + abi.SI_WC_VERSION, ver + 1)
        ram.w32(si + abi.SI_WC_SEC, (wall // 1_000_000_000) & 0xFFFFFFFF)
        ram.w32(si + abi.SI_WC_NSEC, wall % 1_000_000_000)
        ram.w32(si + abi.SI_WC_SEC_HI, (wall // 1_000_000_000) >> 32)
        ram.w32(si + abi.SI_WC_VERSION, ver + 2)
        self.boot_ms = (time.monotonic() - self.boot_t0) * 1000
        self.log_once("boot", f"vCPU {v.vid} up: TSC {b['tsc_khz']} kHz, APIC timer "
                              f"{b['lapic_khz']} kHz, ivshmem at {b['ivshmem_bdf']:#x}")

    # ---- guest memory ----
    def copy_from_guest(self, vcpu: VCPU, va: int, n: int) -> Optional[bytes]:
        if n < 0 or va + n > self.mode.hole_start or va + n > 0xFFFFFFFF:
            return None
        out = bytearray()
        mmu, top = self.mmu, vcpu.guest_table
        while n > 0:
            pa = mmu.translate(top, va, write=False)
            if pa is None:
                return None
            chunk = min(n, 4096 - (va & 0xFFF))
            out += self.ram.read(pa, chunk)
            va += chunk
            n -= chunk
        return bytes(out)

    def copy_to_guest(self, vcpu: VCPU, va: int, data: bytes) -> bool:
        n = len(data)
        if va + n > self.mode.hole_start:
            return False
        mmu, top = self.mmu, vcpu.guest_table
        off = 0
        while off < n:
            pa = mmu.translate(top, va + off, write=True)
            if pa is None:
                return False
            chunk = min(n - off, 4096 - ((va + off) & 0xFFF))
            self.ram.write(pa, data[off:off + chunk])
            off += chunk
        return True

    # ---- events and vCPUs ----
    def on_virq_bound(self, vcpu: int, virq: int, port: Optional[int]) -> None:
        if virq == abi.VIRQ_TIMER:
            self.vcpus[vcpu].mbox.set("virq_timer_port", 0 if port is None else port + 1)
            if port is not None:
                mb = self.vcpus[vcpu].mbox
                mb.set64("periodic_next", self.vcpus[vcpu].now() + mb.get64("periodic_ns"))

    def kick(self, vid: int) -> None:
        if self.machine is not None and self.alive:
            try:
                self.machine.kick(vid)
            except OSError:
                pass

    def doorbell_fd(self, vid: int) -> int:
        return self.machine.doorbell_fd(vid) if self.machine else -1

    def kick_fd(self, vid: int) -> int:
        return self.machine.kick_fd(vid) if self.machine else -1

    def flush_other_vcpus(self, me: VCPU) -> None:
        """flush_tlb_mask() of every other vCPU, complete when this returns,
        as on Xen: each is kicked into the shim, whose exit to the guest
        reloads CR3 (one inside a request gets ACT_CR3 with its answer:
        need_flush), and we wait until each has taken the kick or entered
        the shim since.  hv.lock is let go while we wait (as at a
        preemption point): with many vCPUs on few host CPUs a kick can take
        tens of milliseconds, and the others' requests need not wait."""
        waiting = []
        for v in self.vcpus:
            if v is not me and v.online:
                v.need_flush = True
                waiting.append((v, v.mbox.get("stat_kicks"), v.mbox.get("stat_entries")))
                v.kick()
        deadline = time.monotonic() + FLUSH_WAIT
        pause = threading.Condition(self.hv.lock)   # wait() lets hv.lock go meanwhile
        while waiting:
            waiting = [(v, k, e) for (v, k, e) in waiting
                       if v.online and v.mbox.get("stat_kicks") == k
                       and v.mbox.get("stat_entries") == e]
            if not waiting or not self.alive:
                return
            if time.monotonic() > deadline:
                self.log_once("flush-wait", "remote TLB flush: vCPU(s) "
                              f"{', '.join(str(v.vid) for v, _, _ in waiting)} did not take "
                              f"the kick within {FLUSH_WAIT:g} s; going on")
                return
            pause.wait(FLUSH_POLL)

    def _table_entry_written(self, mfn: int, idx: int) -> None:
        for v in self.vcpus:
            v.sync_shadow_entry(mfn, idx)

    def special_mfns(self) -> set:
        """Frames the hypervisor shares with the guest and keeps (shared_info,
        grant frames, the start-of-day special pages): never ballooned out."""
        b = self.built
        return {b.shared_info_mfn, b.store_mfn, b.console_mfn, *b.grant_mfns}

    # ---- emulation (qemu_xenpv/emulate.py) ----
    def fixup_page_fault(self, vcpu, regs, cr2, errcode):
        from .emulate import fixup_page_fault
        return fixup_page_fault(vcpu, regs, cr2, errcode)

    def emulate_invalid_op(self, vcpu, regs):
        from .emulate import emulate_invalid_op
        return emulate_invalid_op(vcpu, regs)

    def emulate_privileged_op(self, vcpu, regs):
        from .emulate import emulate_privileged_op
        return emulate_privileged_op(vcpu, regs)

    def cpuid_table(self) -> dict:
        """The virtual CPU's CPUID as the shim read it at boot."""
        if getattr(self, "_cpuid", None) is None:
            from .shim import shim_boot
            off = shim_boot.offsets
            n = self.ram.r32(self.boot_pa + off["nr_cpuid"])
            raw = self.ram.read(self.boot_pa + off["cpuid"], 24 * n)
            t = {}
            for i in range(n):
                leaf, sub, a, b, c, d = struct.unpack_from("<6I", raw, 24 * i)
                t[(leaf, sub)] = (a, b, c, d)
            self._cpuid = t
        return self._cpuid

    # ---- the end ----
    def shutdown(self, reason: int, vcpu: Optional[VCPU] = None) -> None:
        """SCHEDOP_shutdown: the guest asked to stop (called with hv.lock held)."""
        name = abi.SHUTDOWN_NAMES.get(reason, f"reason-{reason}")
        if not self.alive:
            return
        self.log(f"shutdown: {name}")
        if name == "crash":
            self.crash_report = self._register_dump(vcpu, "guest requested crash") if vcpu else []
        self.end(name)
        self.hv.call_soon(self._after_shutdown, name)

    def crash(self, reason: str, vcpu: Optional[VCPU] = None, regs: Optional[dict] = None) -> None:
        """domain_crash(): print why and where, stop the domain."""
        if not self.alive:
            return
        self.crash_report = [f"domain_crash: d{self.domid} ({self.name}): {reason}"]
        if vcpu is not None:
            self.crash_report += self._register_dump(vcpu, reason, regs)
        for line in self.crash_report:
            self.hv.dmesg(f"(XEN) {line}")
        self.end("crash", reason)
        self.hv.call_soon(self._after_shutdown, "crash")

    def _register_dump(self, vcpu: VCPU, reason: str, regs: Optional[dict] = None) -> List[str]:
        r = regs or vcpu.last_regs or vcpu.mbox.read_regs()
        from .crashdump import register_dump
        return register_dump(self, vcpu, r)

    def end(self, reason: str, detail: str = "") -> None:
        self.state = CRASHED if reason == "crash" else SHUTDOWN
        self.end_reason = reason
        self.end_detail = detail
        for v in self.vcpus:
            v.stopping = True

    def end_action(self, reason: Optional[str] = None) -> str:
        """What on_poweroff/on_reboot/on_crash say for this end (xl's rules)."""
        reason = reason or self.end_reason
        return {"poweroff": self.config.on_poweroff, "reboot": self.config.on_reboot,
                "crash": self.config.on_crash}.get(reason, "destroy")

    def _after_shutdown(self, reason: str) -> None:
        if self._starting:
            self._deferred_end = reason
            return
        if self.state == DEAD:
            return
        action = self.end_action(reason)
        if action == "preserve":
            self.log(f"{reason}: preserved (use 'qemu-xenpv destroy {self.name}')")
            self.hv.loop.create_task(self._preserve())
        elif action in ("restart", "rename-restart", "coredump-restart") and reason != "crash" \
                or action in ("restart", "coredump-restart") and reason == "crash":
            self.hv.loop.create_task(self.hv.restart_domain(self))
        else:
            self.hv.loop.create_task(self.destroy())

    async def _preserve(self) -> None:
        try:
            await self.machine.pause()
        except Exception:
            pass
        self._notify_end()

    async def destroy(self, reason: Optional[str] = None) -> None:
        if self.state == DEAD:
            return
        if reason and self.alive:
            self.end(reason)
        if self.state not in (SHUTDOWN, CRASHED):
            self.end(reason or "destroyed")
        await self._teardown()
        self._notify_end()

    async def _teardown(self) -> None:
        self.state = DEAD if self.state != DYING or self.end_reason else DEAD
        task = getattr(self, "_watch_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for v in self.vcpus:
            v.stop()
        if self.machine is not None:
            try:
                await self.machine.close()
            except Exception:
                self.machine.cleanup()
        for v in self.vcpus:
            await asyncio.get_running_loop().run_in_executor(None, v.join)
        if self.console is not None:
            with self.hv.lock:
                self.console.disconnect()
        if self.tracer is not None:
            self.tracer.close()
            self.tracer = None
        if self.devices is not None:            # back ends finish, images closed
            await self.devices.shutdown()
        if self.ram is not None:
            self._release_plumbing()
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
        """How the domain ended, once it has: torn down, or shut down and
        preserved (on_poweroff/on_reboot/on_crash = "preserve")."""
        if self.state == DEAD or (self.end_reason and self.state in (SHUTDOWN, CRASHED)
                                  and self.end_action() == "preserve"):
            return self.end_reason or "destroyed"
        fut = asyncio.get_running_loop().create_future()
        self._end_waiters.append(fut)
        return await fut

    # ---- inter-domain plumbing (issue 4): grant table, XenStore ----
    def _setup_grant_table(self, built) -> None:
        """The grant table the builder made (entries 0/1 pre-filled); it may
        grow into spare frames up to GRANT_FRAMES_MAX."""
        from .gnttab import GrantTable
        from .mm import PGT_writable
        mmu = self.mmu
        nspare = max(0, min(GRANT_FRAMES_MAX - len(built.grant_mfns), len(built.extra_mfns)))
        self.gnttab = GrantTable(
            self.domid, self.ram, built.grant_mfns, max_frames=len(built.grant_mfns) + nspare,
            spare=built.extra_mfns[:nspare], owns=mmu.owns,
            get_writable=lambda mfn: mmu.get_page_type(mfn, PGT_writable) == 0,
            put_writable=mmu.put_page_type)

    def _xenstore_introduce(self) -> None:
        """xl's tree for this domain, then INTRODUCE: domain 0 binds the store
        port before the guest runs (XTF probes that it is bound)."""
        self.hv.xenstore.domain_created(self)

    def _release_plumbing(self) -> None:
        """Before the RAM goes: XenStore tree and ring, grant mappings, and
        every event channel (peers' ends become unbound, as in Xen)."""
        hv = self.hv
        try:
            hv.xenstore.domain_destroyed(self)
        except Exception:
            log.exception("d%d: xenstore release", self.domid)
        with hv.lock:
            hv.grants.domain_destroyed(self.domid)
            self.evtchn.reset()

    # ---- control requests (xl shutdown/reboot/sysrq write control/*) ----
    async def request_shutdown(self, reason: str, wait: bool = False,
                               timeout: float = SHUTDOWN_ACK_TIMEOUT) -> dict:
        """Write control/shutdown as xl does and wait (up to `timeout` s) for
        the guest to acknowledge by clearing it; with `wait`, also until the
        domain has ended."""
        if reason not in ("poweroff", "reboot", "halt", "suspend"):
            raise XenPVError(f"unknown shutdown request '{reason}'")
        if not self.alive:
            raise XenPVError(f"domain '{self.name}' is not running")
        xs = self.hv.xenstore
        path = f"/local/domain/{self.domid}/control/shutdown"
        xs.write(path, reason)
        self.log(f"control/shutdown <- '{reason}'")
        end = asyncio.ensure_future(self._until_not_alive())
        try:
            acked = asyncio.ensure_future(xs.wait_for(path, lambda v: not v, timeout))
            await asyncio.wait([acked, end], return_when=asyncio.FIRST_COMPLETED)
            if not end.done() and not acked.result():
                raise XenPVError(
                    f"domain '{self.name}' did not acknowledge the {reason} request within "
                    f"{timeout:g} s (control/shutdown is still '{reason}': the guest does not "
                    f"watch it); 'qemu-xenpv destroy {self.name}' stops it now")
            if wait and not end.done():
                await end
        finally:
            if not end.done():
                end.cancel()
        verb = {"poweroff": "Shutting down", "halt": "Shutting down", "reboot": "Rebooting",
                "suspend": "Suspending"}[reason]
        return {"ok": True, "message": f"{verb} domain {self.domid}"
                + (f": it ended ({self.end_reason})" if wait and self.end_reason else "")}

    async def _until_not_alive(self) -> None:
        """xl's "wait for shutdown or death": until this Domain has shut down
        and, unless it is preserved, been torn down (a reboot makes a new one)."""
        while self.alive:
            await asyncio.sleep(0.02)
        action = {"poweroff": self.config.on_poweroff, "reboot": self.config.on_reboot,
                  "crash": self.config.on_crash}.get(self.end_reason, "destroy")
        while action != "preserve" and self.state != DEAD:
            await asyncio.sleep(0.02)

    async def request_sysrq(self, key: str) -> dict:
        """xl sysrq: write the key to control/sysrq (the guest reads and clears it)."""
        if len(key) != 1:
            raise XenPVError(f"sysrq wants exactly one character, not '{key}'")
        if not self.alive:
            raise XenPVError(f"domain '{self.name}' is not running")
        self.hv.xenstore.write(f"/local/domain/{self.domid}/control/sysrq", key)
        self.log(f"control/sysrq <- '{key}'")
        return {"ok": True}

    # ---- information ----
    def state_flags(self) -> str:
        f = ["-"] * 6
        if self.state == RUNNING:
            f[1 if all(v.blocked for v in self.vcpus if v.online) else 0] = "b" if all(
                v.blocked for v in self.vcpus if v.online) else "r"
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
                "vcpus": len(self.vcpus), "state": self.state, "flags": self.state_flags(),
                "time": round(self.cpu_seconds(), 1), "console_port": self.console_port,
                "accel": self.accel, "gdb_port": self.gdb_port,
                "end_reason": self.end_reason, "kernel": self.config.kernel}
