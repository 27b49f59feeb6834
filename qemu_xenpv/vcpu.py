"""One virtual CPU: its service thread (the Python end of the shim's
mailbox) and the per-vCPU state Xen keeps (trap table, callbacks, base
pointer, GDT/LDT)."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from typing import Dict, Optional, Tuple

from . import abi
from .abi import EINVAL, ENOENT
from .hypercall import PREEMPT_PAUSE, Call, DomainCrash, dispatch, _load_families
from . import crashdump  # noqa: F401  (no imports on a vCPU's first request)

_load_families()
from .mm import PGT_l2, PGT_l3, PGT_seg_desc, PGT_writable
from .shim import K, Mailbox, M, R, V
V_DR = V["dr"]
from . import traps

log = logging.getLogger("qemu_xenpv.vcpu")

SPIN_NS = 40_000            # Python keeps polling this long after an answer
_U32 = struct.Struct("<I")
M_REQ_KIND = M["req_kind"]
R_EAX = R["eax"]
REQ_HYPERCALL = K.REQ_HYPERCALL
ACT_EVENTS = K.ACT_EVENTS
BLOCKING = K.ACT_BLOCK | K.ACT_RETRY


class VCPU:
    def __init__(self, dom, vid: int, frames):
        self.dom = dom
        self.vid = vid
        self.frames = frames
        self.mbox = Mailbox(dom.ram, frames.estack, frames.priv)
        self.vcpu_info_pa = dom.shared_info_pa + vid * abi.VCPU_INFO_SIZE
        self.guest_table: Optional[int] = None      # top-level page-table mfn
        self.traps: Dict[int, Tuple[int, int, int]] = {}
        self.callbacks: Dict[int, Tuple[int, int, int]] = {}
        self.gdt_frames = []
        self.ldt = (0, 0)
        self.ldt_frames = []
        self.iopl = 0
        self.iobmp = (0, 0)                 # PHYSDEVOP_set_iobitmap: (va, nr_ports)
        # the guest's view of CR4: PAE as built, FXSR/XMM exceptions as the shim set
        self.cr4 = (0x20 if getattr(getattr(dom, "mode", None), "pae", True) else 0) | 0x600
        self.dr = [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x00000400]
        self.online = vid == 0
        self.initialised = vid == 0
        self.in_call = False
        self.poll_ports = None
        self.runstate_area = 0
        self.thread: Optional[threading.Thread] = None
        self.stopping = False
        self.last_regs: Optional[dict] = None
        self.calls = 0
        self.blocked = False
        self.need_flush = False             # another vCPU flushed the TLBs
        self.again = None                   # a preempted batch: its remaining arguments
        self.vcpu_info_registered = False
        self.shadow_sources = {}

    # ---- service thread ----
    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"vcpu-{self.dom.domid}.{self.vid}",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        fd = self.dom.doorbell_fd(self.vid)
        if fd >= 0:
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                pass

    def join(self, timeout: float = 2.0) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        hv = self.dom.hv
        lock = hv.lock

        def handler(kind: int, args) -> int:
            if self.stopping:
                return -1
            if args is None:
                return 0
            for _ in range(40):             # the loop thread waits for the lock:
                if not hv.loop_waiting:     # let it in (for at most ~2 ms)
                    break
                time.sleep(0.00005)
            done_actions = 0                # what preempted parts of a batch asked for
            while True:
                with lock:
                    if self.stopping:
                        return -1
                    self.in_call = True
                    self.again = None
                    try:
                        action = self._handle(kind, args)
                        if self.again is None and self.need_flush:
                            self.need_flush = False
                            action |= K.ACT_CR3
                    except Exception as e:      # a hypervisor bug must not kill the process
                        log.exception("vCPU %d.%d: internal error", self.dom.domid, self.vid)
                        self.dom.crash(f"internal hypervisor error: {e!r}", self)
                        action = K.ACT_HALT
                        self.again = None
                    finally:
                        self.in_call = False
                    self.blocked = bool(action & BLOCKING)
                if self.again is None:
                    return action | done_actions
                # a preempted batch: others get hv.lock, then it goes on
                done_actions |= action
                args = self.again
                time.sleep(PREEMPT_PAUSE)

        try:
            self.dom.native.serve(self.mbox.addr_native, self.dom.doorbell_fd(self.vid),
                                  self.dom.kick_fd(self.vid), SPIN_NS, 200, handler)
        except Exception:
            log.exception("vCPU %d.%d: service loop failed", self.dom.domid, self.vid)

    def _handle(self, kind: int, args: tuple) -> int:
        self.calls += 1
        if kind == REQ_HYPERCALL:
            call = Call(self, None, args)
            try:
                ret = dispatch(call)
            except DomainCrash as e:
                self.dom.crash(e.reason, self, call.regs)
                return K.ACT_HALT
            if call.again is not None:
                # preempted: its arguments now describe what is left (the
                # guest's registers too, as Xen's continuation leaves them)
                self.again = call.again + (call.nr,)
                regs = call.regs
                for k, v in zip(("ebx", "ecx", "edx", "esi", "edi", "ebp"), call.again):
                    regs[k] = v
                self.mbox.write_regs(regs)
                return call.action
            if call.action & K.ACT_RETRY:
                # asked again later: no result yet, the arguments stay (or
                # point past what is done: a multicall's continuation)
                if call.regs_loaded:
                    self.mbox.write_regs(call.regs)
                return call.action
            mm = self.dom.ram.mm
            if call.regs_loaded:
                regs = call.regs
                if not call.no_retval:
                    regs["eax"] = ret & 0xFFFFFFFF
                self.mbox.write_regs(regs)
            elif not call.no_retval:
                _U32.pack_into(mm, self.mbox.base + R_EAX, ret & 0xFFFFFFFF)
            vi = self.vcpu_info_pa
            if mm[vi] and not mm[vi + 1]:       # upcall pending and not masked
                return call.action | ACT_EVENTS
            return call.action
        if kind == K.REQ_TRAP:
            regs = self.mbox.read_regs()
            self.last_regs = regs
            mb = self.mbox
            try:
                act = traps.handle_trap(self, regs, mb.get("trap_vector"), mb.get("trap_errcode"),
                                        mb.get("trap_cr2"))
            except DomainCrash as e:
                self.dom.crash(e.reason, self, regs)
                return K.ACT_HALT
            self.mbox.write_regs(regs)
            return act
        if kind == K.REQ_BOOT:
            self.dom.on_vcpu_boot(self)
            return 0
        if kind == K.REQ_PARKED:
            # VCPUOP_down: sleep until VCPUOP_up clears park (and kicks us)
            return K.ACT_RETRY if self.mbox.get("park") else 0
        regs = self.mbox.read_regs()
        if kind == K.REQ_EXIT_FAULT:
            cb = self.callbacks.get(abi.CALLBACKTYPE_failsafe)
            if cb and cb[0] & ~3:
                self.mbox.set("bounce_flags", K.TBF_INTERRUPT if cb[2] & abi.CALLBACKF_mask_events else 0)
                return K.ACT_FAILSAFE
            self.dom.crash(f"cannot return to the guest: vector {self.mbox.get('fault_vector')} "
                           f"at {self.mbox.get('fault_eip'):#x} (bad selector or iret frame)",
                           self, regs)
            return K.ACT_HALT
        if kind == K.REQ_BOUNCE_FAULT:
            self.dom.crash("cannot write an exception frame on the guest kernel stack", self, regs)
            return K.ACT_HALT
        if kind == K.REQ_BAD_FRAME:
            self.dom.crash("invalid guest frame (ring 0 or mismatched SS)", self, regs)
            return K.ACT_HALT
        if kind == K.REQ_PANIC:
            self.dom.crash("shim: " + self.dom.shim_panic_message(), self, regs)
            return K.ACT_HALT
        self.dom.crash(f"unknown shim request {kind}", self, regs)
        return K.ACT_HALT

    # ---- events ----
    def mark_events_pending(self) -> None:
        if self.dom.ram.xchg8(self.vcpu_info_pa + abi.VI_UPCALL_PENDING, 1) == 0:
            self.kick()

    def kick(self) -> None:
        """Make the vCPU look at its events: while it is in a hypercall the
        shim checks on the way out; otherwise interrupt it."""
        if self.in_call and threading.current_thread() is self.thread:
            return
        self.dom.kick(self.vid)

    def check_poller(self, port: int) -> None:
        if self.poll_ports is not None and port in self.poll_ports:
            self.kick()

    # ---- fast paths the shim takes alone ----
    def sync_fast_paths(self) -> None:
        """The iret hypercall and rdmsr are answered in the shim from what we
        write here, except when every call must reach Python: a hypercall
        trace, or architectural IOPL (iret then sets the virtual IOPL)."""
        from .emulate import fast_msr_table
        dom = self.dom
        flags = K.FAST_RDMSR | K.FAST_PF
        if dom.tracer is None and not dom.vm_assist & (1 << 4):     # architectural_iopl
            flags |= K.FAST_IRET
        if dom.vm_assist & (1 << 2):                    # writable_pagetables
            flags |= K.FAST_PTWR
        self.mbox.set_fast_msrs(fast_msr_table(self))
        self.mbox.set("fast_flags", flags)

    def map_vinfo(self) -> None:
        """Show the shim's guest-view fast paths where vcpu_info is."""
        mem = getattr(self.dom, "mem", None)
        if mem is not None:
            self.mbox.set("gv_vinfo", mem.map_vinfo(self.dom.ram, self.vid, self.vcpu_info_pa))

    # ---- trap table and callbacks ----
    def clear_traps(self) -> None:
        self.traps.clear()
        for vec in range(256):
            self.mbox.set_trap(vec, 0, 0, 0)

    def set_trap(self, vector: int, flags: int, cs: int, eip: int) -> None:
        self.traps[vector] = (flags, cs, eip)
        self.mbox.set_trap(vector, cs, flags, eip)

    def set_callback(self, ctype: int, cs: int, eip: int, flags: int) -> None:
        self.callbacks[ctype] = (cs, eip, flags)
        if ctype == abi.CALLBACKTYPE_event:
            self.mbox.set("event_cs", cs)
            self.mbox.set("event_eip", eip)
        elif ctype == abi.CALLBACKTYPE_failsafe:
            self.mbox.set("failsafe_cs", cs)
            self.mbox.set("failsafe_eip", eip)

    # ---- address space ----
    def new_baseptr(self, mfn: int) -> int:
        mmu = self.dom.mmu
        top = PGT_l3 if self.dom.pae else PGT_l2
        if mfn == self.guest_table:
            return 0
        if self.dom.pae and mfn >= 0x100000:
            return -EINVAL
        rc = mmu.get_page_and_type(mfn, top)
        if rc:
            return rc
        old = self.guest_table
        self.guest_table = mfn
        self.load_cr3()
        if old is not None:
            mmu.put_page_and_type(old)
        return 0

    def load_cr3(self) -> None:
        """Build what the CPU loads for this vCPU from the guest's tables.

        PAE: four PDPTEs reduced to P (a native PDPTE accepts nothing else),
        the fourth pointing at this vCPU's copy of the L2 that holds the
        hypervisor hole.  Non-PAE: this vCPU's copy of the page directory.
        The copies carry the guest's own entries below the hole and this
        vCPU's view of the hole (only its own entry stack is writable);
        every validated update of the originals is copied in
        (sync_shadow_entry)."""
        ram = self.dom.ram
        mode = self.dom.mode
        top = self.frames.shadow_top
        n = mode.first_xen_l2_slot
        if self.dom.pae:
            shadow = self.frames.shadow_l3
            l3 = self.guest_table << 12
            for i in range(3):
                e = ram.r64(l3 + i * 8)
                ram.w64(shadow + i * 8, (e & 0x000FFFFFFFFFF000) | 1 if e & 1 else 0)
            l2 = mode.addr(ram.r64(l3 + 24))
            ram.write(top, ram.read(l2, n * 8))
            for slot, e in self.dom.mem.vcpu_hole_l2(self.vid).items():
                ram.w64(top + slot * 8, e)
            ram.w64(shadow + 24, top | 1)
            self.shadow_sources = {self.guest_table: "l3", l2 >> 12: "l2"}
            self.mbox.set("guest_cr3", shadow)
        else:
            pd = self.guest_table << 12
            ram.write(top, ram.read(pd, n * 4))
            for slot in range(n, 1024):
                ram.w32(top + slot * 4, 0)
            for slot, e in self.dom.mem.vcpu_hole_l2(self.vid).items():
                ram.w32(top + slot * 4, e)
            self.shadow_sources = {self.guest_table: "pd"}
            self.mbox.set("guest_cr3", top)

    def sync_shadow_entry(self, mfn: int, idx: int) -> None:
        """A validated write to entry idx of guest table mfn: copy it into
        this vCPU's shadow if the shadow was made from that table."""
        kind = self.shadow_sources.get(mfn)
        if kind is None:
            return
        ram = self.dom.ram
        if kind == "l3":
            if idx < 3:
                e = ram.r64((mfn << 12) + idx * 8)
                ram.w64(self.frames.shadow_l3 + idx * 8,
                        (e & 0x000FFFFFFFFFF000) | 1 if e & 1 else 0)
        elif idx < self.dom.mode.first_xen_l2_slot:
            size = 8 if kind == "l2" else 4
            ram.write(self.frames.shadow_top + idx * size,
                      ram.read((mfn << 12) + idx * size, size))

    def set_gdt(self, frames, entries: int, call) -> int:
        mmu = self.dom.mmu
        taken = []
        for mfn in frames:
            rc = mmu.get_page_and_type(mfn, PGT_seg_desc)
            if rc:
                for m in taken:
                    mmu.put_page_and_type(m)
                return rc
            taken.append(mfn)
        for m in self.gdt_frames:
            mmu.put_page_and_type(m)
        self.gdt_frames = taken
        self.map_gdt()
        call.action |= K.ACT_GDT
        return 0

    def map_gdt(self) -> None:
        """This vCPU's GDT window: its frames, read-only, then the zero page."""
        mem = self.dom.mem
        base = K.GDT_BASE + self.vid * K.GDT_STRIDE
        for p in range(14):
            pa = (self.gdt_frames[p] << 12) if p < len(self.gdt_frames) else mem.zero_page
            mem.map_pub(self.dom.ram, base + p * 4096, pa, guest_rw=False, shim_rw=False)
        self.mbox.set("gdt_limit", K.GDT_LIMIT)

    def bring_up(self, caller) -> int:
        """VCPUOP_up: start an initialised vCPU from its vcpu_guest_context,
        or let a downed one continue."""
        if self.online:
            return 0
        if self.thread is not None:                 # was downed: continue
            self.online = True
            self.mbox.set("park", 0)
            self.kick()
            return 0
        ctx = self.context
        regs = abi.cpu_user_regs.unpack(ctx, abi.vcpu_guest_context_user_regs_off)
        from .hypercall.traps import fixup_selector
        regs["cs"] = fixup_selector(regs["cs"])
        regs["ss"] = fixup_selector(regs["ss"])
        regs["eflags"] |= 0x200
        for vec in range(256):
            ti = abi.trap_info.unpack(ctx, 584 + vec * 8)
            if ti["address"]:
                self.set_trap(ti["vector"], ti["flags"], fixup_selector(ti["cs"]), ti["address"])
        ev_cs, ev_eip, fs_cs, fs_eip = struct.unpack_from("<4I", ctx, 2780)
        self.set_callback(abi.CALLBACKTYPE_event, fixup_selector(ev_cs), ev_eip, 0)
        self.set_callback(abi.CALLBACKTYPE_failsafe, fixup_selector(fs_cs), fs_eip, 0)
        self.dr = list(struct.unpack_from("<8I", ctx, 2748))
        self.dr[6] = self.dr[6] or 0xFFFF0FF0
        self.dr[7] = self.dr[7] or 0x00000400
        self.load_debugregs()
        self.map_gdt()
        ldt_base, ldt_ents = struct.unpack_from("<II", ctx, 2632)
        if ldt_ents:
            self.set_ldt(ldt_base, ldt_ents)
        self.load_cr3()
        self.mbox.write_regs(regs)
        self.online = True
        self.start()
        caller.vcpu.mbox.set("start_ap", self.vid)
        caller.action |= K.ACT_START_AP
        return 0

    def bring_down(self) -> int:
        """VCPUOP_down: the vCPU stops at its next exit from the shim."""
        if not self.online:
            return 0
        self.online = False
        self.mbox.set("park", 1)
        self.kick()
        return 0

    def set_ldt(self, base: int, ents: int) -> int:
        if base & 0xFFF or ents > 8192 or (ents and base + ents * 8 > self.dom.mode.hole_start):
            return -EINVAL
        mmu = self.dom.mmu
        mem = self.dom.mem
        for m in self.ldt_frames:
            mmu.put_page_and_type(m)
        self.ldt_frames = []
        lbase = K.LDT_BASE + self.vid * K.LDT_STRIDE
        for p in range(16):
            mem.unmap_pub(self.dom.ram, lbase + p * 4096)
        self.ldt = (base, ents)
        if ents == 0:
            self.mbox.set("ldt_sel", 0)
            return 0
        for p in range((ents * 8 + 4095) // 4096):
            pa = mmu.translate(self.guest_table, base + p * 4096, write=False)
            if pa is None:
                continue            # mapped lazily on the guest's first use
            mfn = pa >> 12
            if mmu.get_page_and_type(mfn, PGT_seg_desc) == 0:
                self.ldt_frames.append(mfn)
                mem.map_pub(self.dom.ram, lbase + p * 4096, pa & ~0xFFF, guest_rw=False,
                            shim_rw=False)
        # the LDT descriptor lives in Xen's reserved GDT page (entry 7168+9)
        limit = ents * 8 - 1
        lo = (limit & 0xFFFF) | ((lbase & 0xFFFF) << 16)
        hi = ((lbase >> 16) & 0xFF) | (0x82 << 8) | (limit & 0xF0000) | (lbase & 0xFF000000)
        ram = self.dom.ram
        ram.w32(self.frames.gdt_reserved + 9 * 8, lo)
        ram.w32(self.frames.gdt_reserved + 9 * 8 + 4, hi)
        self.mbox.set("ldt_sel", K.LDT_SEL)
        return 0

    def initialise(self, ctx: bytes) -> int:
        """VCPUOP_initialise: check and take a vcpu_guest_context (compat
        arch_set_info_guest): its GDT frames and its base pointer are
        validated and referenced as if the vCPU ran."""
        flags, = struct.unpack_from("<I", ctx, 512)
        gdt_frames = struct.unpack_from("<16I", ctx, 2640)
        gdt_ents, kernel_ss, kernel_sp = struct.unpack_from("<III", ctx, 2704)
        cr3, = struct.unpack_from("<I", ctx, 2716 + 12)
        if gdt_ents > abi.FIRST_RESERVED_GDT_ENTRY:
            return -EINVAL
        mmu = self.dom.mmu
        taken = []
        for mfn in gdt_frames[:(gdt_ents + 511) // 512]:
            rc = mmu.get_page_and_type(mfn, PGT_seg_desc)
            if rc:
                for m in taken:
                    mmu.put_page_and_type(m)
                return rc
            taken.append(mfn)
        top = abi.xen_cr3_to_pfn(cr3)
        rc = mmu.get_page_and_type(top, PGT_l3 if self.dom.pae else PGT_l2)
        if rc:
            for m in taken:
                mmu.put_page_and_type(m)
            return rc
        self.gdt_frames, self.guest_table = taken, top
        self.mbox.set("kernel_ss", (kernel_ss & ~3) | 1 if not kernel_ss & 3 else kernel_ss)
        self.mbox.set("kernel_sp", kernel_sp)
        self.context = bytes(ctx)
        self.initialised = True
        return 0

    def load_debugregs(self) -> None:
        """Give the shim the hardware debug registers (ACT_DR loads them)."""
        base = self.mbox.priv + V_DR
        for i in (0, 1, 2, 3, 7):
            self.dom.ram.w32(base + 4 * i, self.dr[i])

    def read_descriptor(self, sel: int):
        """The (low, high) words of a GDT/LDT descriptor, or None."""
        idx = sel >> 3
        ram = self.dom.ram
        if sel & 4:
            base, ents = self.ldt
            if idx >= ents:
                return None
            data = self.dom.copy_from_guest(self, base + idx * 8, 8)
        elif idx >= abi.FIRST_RESERVED_GDT_ENTRY:
            off = (idx - abi.FIRST_RESERVED_GDT_ENTRY) * 8
            if off >= 4096:
                return None
            data = ram.read(self.frames.gdt_reserved + off, 8)
        else:
            frame = idx // 512
            if frame >= len(self.gdt_frames):
                return None
            data = ram.read((self.gdt_frames[frame] << 12) + (idx % 512) * 8, 8)
        if data is None:
            return None
        return struct.unpack("<II", data)

    def set_periodic(self, period: int, call) -> None:
        self.mbox.set64("periodic_ns", period)
        self.mbox.set64("periodic_next", self.now() + period)
        call.action |= K.ACT_TIMER

    def register_vcpu_info(self, mfn: int, offset: int, caller: "VCPU") -> int:
        """map_vcpu_info(): once per vCPU, by itself or while it is down,
        into a page the domain owns, which stays typed writable from then on
        (so it never becomes a page table)."""
        mmu = self.dom.mmu
        if offset > 4096 - abi.VCPU_INFO_SIZE or self.vcpu_info_registered:
            return -EINVAL
        if caller is not self and self.online:
            return -EINVAL
        if not mmu.owns(mfn) or mmu.get_page_and_type(mfn, PGT_writable):
            return -EINVAL
        self.vcpu_info_registered = True
        new = (mfn << 12) + offset
        ram = self.dom.ram
        ram.write(new, ram.read(self.vcpu_info_pa, abi.VCPU_INFO_SIZE))
        self.vcpu_info_pa = new
        self.mbox.set("vcpu_info_pa", new)
        self.map_vinfo()
        self.need_flush = True                  # its view of the hole changed
        # everything pending, so nothing is lost (a spurious upcall at worst)
        ram.w32(new + abi.VI_PENDING_SEL, 0xFFFFFFFF)
        self.mark_events_pending()
        return 0

    def now(self) -> int:
        """System time (ns) when this vCPU's current request was posted."""
        return self.dom.now_ns(self.mbox.req_tsc())

    def runstate(self) -> dict:
        now = self.now()
        return {"state": 0, "state_entry_time": now, "time": [now, 0, 0, 0]}
