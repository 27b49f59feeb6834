"""PV drivers for HVM guests: the hypercall ABI reached from ring 0 of an
HVM guest, the HVM params, shared_info placement, event channels, the PV
console and XenStore rings.

Discovery.  Stock QEMU under TCG cannot show Xen's CPUID leaves, and a
guest cannot ask for the hypercall page through Xen's MSR (TCG raises #GP
on unknown MSRs).  The builder therefore writes the hypercall area itself
and a signed table that points to it: ``struct hvm_pv_info`` ("XenPVHVM",
all bytes summing to 0) at 0x9FA00 in E820-reserved memory
(layout.pv_info).  Guests written for qemu-xenpv look there; stock Linux
and other guests that expect Xen's CPUID leaves do not, so they run
without PV drivers.

Transport (firmware/hvmloader/hypercall_page.S).  The stubs store the
registers, CR3/CR0/CR4 and the APIC id in the vCPU's mailbox, write the
APIC id to an I/O port (an isa-debugcon on a socketpair: port I/O works
whatever paging the guest uses) and spin on the answer.  One service
thread reads the doorbell bytes and answers each mailbox under the
hypervisor lock.  Pointer arguments are guest-virtual: they are translated
by walking the guest's page tables (2-level, PSE, PAE) from the CR3 the
stub posted, as Xen's hvm_copy_{from,to}_guest_virt do.

Events.  Event channels are the PV ones (qemu_xenpv/evtchn.py) on the
domain's shared_info.  The callback goes to vCPU 0 while its upcall is
pending, through one of the two things an outside process can raise in
stock QEMU: the vector type (HVM_PARAM_CALLBACK_IRQ = 2 << 56 | vector) is
an MSI-X message of the callback device, an ivshmem-doorbell whose entry i
hvmloader points at vector 0x20 + i on APIC 0, so Python signals the entry
of the guest's vector; the GSI type with GSI 3 is COM2's receive interrupt:
Python sends COM2 a byte and the guest acknowledges the line by reading
COM2's receive register (port 0x2F8).  The PCI INTx type answers -ENOSYS.

Grant tables.  Version 1 on the PV engine (qemu_xenpv/gnttab.py); frames
start on home pages in the PV area and XENMEM_add_to_physmap moves them
into the guest's RAM (see PVDrivers.place).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from typing import Dict, Optional

from .. import abi
from ..abi import EFAULT, EINVAL, ENOSYS, EPERM
from ..hypercall import PREEMPT_PAUSE
from . import layout

log = logging.getLogger("qemu_xenpv.hvm.pv")

XEN_VERSION = (4 << 16) | 17

HVMOP_set_param, HVMOP_get_param = 0, 1
HVM_PARAM_CALLBACK_IRQ, HVM_PARAM_STORE_PFN, HVM_PARAM_STORE_EVTCHN = 0, 1, 2
HVM_PARAM_PAE_ENABLED = 4
HVM_PARAM_CONSOLE_PFN, HVM_PARAM_CONSOLE_EVTCHN = 17, 18
HVM_NR_PARAMS = 39
CALLBACK_TYPE_GSI, CALLBACK_TYPE_PCI_INTX, CALLBACK_TYPE_VECTOR = 0, 1, 2
CALLBACK_GSI = 3                    # COM2
COM2_RBR = 0x2F8
# the guest may set these; the rest are the toolstack's
GUEST_SETTABLE = {HVM_PARAM_CALLBACK_IRQ}

XENMEM_add_to_physmap = 7
XENMAPSPACE_shared_info, XENMAPSPACE_grant_table = 0, 1
SHARED_INFO, GRANT = "shared_info", "grant"

HVM_FEATURES = ((1 << abi.XENFEAT_writable_page_tables) |
                (1 << abi.XENFEAT_writable_descriptor_tables) |
                (1 << abi.XENFEAT_auto_translated_physmap) |
                (1 << abi.XENFEAT_supervisor_mode_kernel))

# a hypercall that does not return to the guest (SCHEDOP_shutdown, as on
# Xen: the vCPU stays in the stub's spin until the domain is gone)
NO_ANSWER = object()

_MBOX = struct.Struct("<13I")       # req resp eax ebx ecx edx esi edi ebp cr3 cr0 cr4 apic


# ---- guest page walk --------------------------------------------------
def translate(ram, cr0: int, cr3: int, cr4: int, va: int, write: bool) -> Optional[int]:
    """Guest-virtual -> guest-physical for a supervisor access, or None."""
    va &= 0xFFFFFFFF
    if not cr0 & 0x80000000:                        # paging off
        return va
    wp = bool(cr0 & 0x10000)

    def ok(e: int) -> bool:
        return bool(e & 1) and (not write or not wp or bool(e & 2))

    def rd64(a: int) -> Optional[int]:
        return ram.r64(a) if 0 <= a and a + 8 <= ram.size else None

    def rd32(a: int) -> Optional[int]:
        return ram.r32(a) if 0 <= a and a + 4 <= ram.size else None

    if cr4 & 0x20:                                  # PAE
        pdpte = rd64((cr3 & 0xFFFFFFE0) + ((va >> 30) & 3) * 8)
        if pdpte is None or not pdpte & 1:
            return None
        pde = rd64((pdpte & 0x000FFFFFFFFFF000) + ((va >> 21) & 0x1FF) * 8)
        if pde is None or not ok(pde):
            return None
        if pde & 0x80:
            return (pde & 0x000FFFFFFFE00000) | (va & 0x1FFFFF)
        pte = rd64((pde & 0x000FFFFFFFFFF000) + ((va >> 12) & 0x1FF) * 8)
        if pte is None or not ok(pte):
            return None
        return (pte & 0x000FFFFFFFFFF000) | (va & 0xFFF)
    pde = rd32((cr3 & 0xFFFFF000) + (va >> 22) * 4)
    if pde is None or not ok(pde):
        return None
    if pde & 0x80 and cr4 & 0x10:                   # PSE 4 MiB page
        return (pde & 0xFFC00000) | (va & 0x3FFFFF)
    pte = rd32((pde & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4)
    if pte is None or not ok(pte):
        return None
    return (pte & 0xFFFFF000) | (va & 0xFFF)


class HVMMode:
    pae = True
    hole_start = 0xFFFFFFFF         # no hypervisor hole in an HVM guest


class HVMVcpu:
    """What the PV hypercall families and event channels need of a vCPU."""

    def __init__(self, pv: "PVDrivers", vid: int):
        self.pv = pv
        self.dom = pv.dom
        self.vid = vid
        self.online = True
        self.blocked = False
        self.poll_ports = None
        self.in_call = False
        self.again = None                   # a preempted batch: its remaining arguments
        self.cr0 = self.cr3 = self.cr4 = 0
        self.calls = 0

    @property
    def vcpu_info_pa(self) -> int:
        if self.vid < 32:
            return self.dom.shared_info_pa + self.vid * abi.VCPU_INFO_SIZE
        return self.pv.area + layout.PV_SCRATCH_PAGE * 4096     # no events beyond 32

    def mark_events_pending(self) -> None:
        if self.dom.ram.xchg8(self.vcpu_info_pa + abi.VI_UPCALL_PENDING, 1) == 0:
            self.kick()

    def kick(self) -> None:
        self.pv.raise_callback(self)

    def check_poller(self, port: int) -> None:
        pass

    def now(self) -> int:
        return time.monotonic_ns()


class PVDrivers:
    def __init__(self, dom):
        self.dom = dom
        self.hv = dom.hv
        self.ram = dom.ram
        self.area = layout.pv_area(dom.ram.size)
        self.params: Dict[int, int] = {HVM_PARAM_PAE_ENABLED: 1}
        self.db_ours, self.db_theirs = socket.socketpair()
        self.com2_ours, self.com2_theirs = socket.socketpair()
        self.com2_ours.setblocking(False)
        from qemu_xenpv.machine.ivshmem import IvshmemServer
        self.cb_device = IvshmemServer(vectors=layout.CB_VECTORS, doorbells=0)
        self.thread: Optional[threading.Thread] = None
        self.stopping = False
        self.pv_console = None
        self.calls = 0
        self.placed: Dict[int, tuple] = {}  # gpfn -> (SHARED_INFO | GRANT, index)

    # ---- set-up (phase "pv", before QEMU starts) ----
    def setup(self) -> None:
        dom = self.dom
        dom.shared_info_pa = self.area + layout.PV_SHARED_INFO_PAGE * 4096
        store_pfn = (self.area >> 12) + layout.PV_STORE_PAGE
        console_pfn = (self.area >> 12) + layout.PV_CONSOLE_PAGE
        dom.store_evtchn = dom.evtchn.alloc_unbound(0)
        dom.console_evtchn = dom.evtchn.alloc_unbound(0)
        self.params.update({HVM_PARAM_STORE_PFN: store_pfn, HVM_PARAM_STORE_EVTCHN: dom.store_evtchn,
                            HVM_PARAM_CONSOLE_PFN: console_pfn,
                            HVM_PARAM_CONSOLE_EVTCHN: dom.console_evtchn})

        class Built:
            pass
        dom.built = Built()
        dom.built.store_mfn = store_pfn
        dom.built.console_mfn = console_pfn
        from qemu_xenpv.devices.console import ConsoleBackend
        self.pv_console = ConsoleBackend(dom, console_pfn, dom.console_evtchn)
        self.setup_grant_table()

    def setup_grant_table(self) -> None:
        """Grant table v1 with Xen's INITIAL_NR_GRANT_FRAMES (1), growing to
        PV_GRANT_FRAMES.  Frame i lives on its home page in the PV area
        until XENMEM_add_to_physmap(XENMAPSPACE_grant_table, i) places it."""
        from ..gnttab import GrantTable
        dom = self.dom
        dom.gnttab = GrantTable(dom.domid, self.ram, [], max_frames=layout.PV_GRANT_FRAMES,
                                spare=[self.home(GRANT, i) for i in range(layout.PV_GRANT_FRAMES)],
                                owns=self.is_ram)
        dom.gnttab.grow(1)

    # ---- the special pages and where the guest sees them ----
    # shared_info and the grant-table frames are Xen's pages; a guest puts
    # them into its physical address space with XENMEM_add_to_physmap.  Our
    # RAM is flat, so a page is *moved*: its contents go to the chosen gpfn,
    # which becomes it; a special page it displaces goes back to its home in
    # the PV area, as Xen unhooks a special page from a reused slot.  The
    # gpfn a page leaves keeps a stale copy (on Xen it becomes a hole).
    def home(self, kind: str, idx: int) -> int:
        page = layout.PV_SHARED_INFO_PAGE if kind == SHARED_INFO else layout.PV_GRANT_PAGE + idx
        return (self.area >> 12) + page

    def where(self, kind: str, idx: int) -> int:
        if kind == SHARED_INFO:
            return self.dom.shared_info_pa >> 12
        return self.dom.gnttab.frames[idx]

    def is_ram(self, gpfn: int) -> bool:
        """The gpfn is the guest's RAM (the e820 RAM ranges)."""
        pa = gpfn << 12
        return 0 <= pa and pa + 4096 <= layout.RESERVED_START or \
            layout.KERNEL_BASE <= pa and pa + 4096 <= self.area

    def place(self, kind: str, idx: int, gpfn: int) -> None:
        cur = self.where(kind, idx)
        if cur == gpfn:
            return
        other = self.placed.get(gpfn)
        if other is not None:
            self._move(other, self.home(*other))
        self._move((kind, idx), gpfn)

    def _move(self, key, gpfn: int) -> None:
        kind, idx = key
        cur = self.where(kind, idx)
        self.ram.write(gpfn << 12, self.ram.read(cur << 12, 4096))
        self.placed.pop(cur, None)
        if gpfn != self.home(kind, idx):
            self.placed[gpfn] = key
        if kind == SHARED_INFO:
            self.dom.shared_info_pa = gpfn << 12
            self.dom.publish_wallclock()
        else:
            self.dom.gnttab.frames[idx] = gpfn

    def qemu_args(self):
        return ["-chardev", f"socket,id=xpvdb,fd={self.db_theirs.fileno()}",
                "-device", f"isa-debugcon,iobase={layout.DOORBELL_PORT:#x},chardev=xpvdb",
                "-chardev", f"socket,id=com2,fd={self.com2_theirs.fileno()}",
                "-serial", "chardev:com2",
                "-chardev", f"socket,id=xpvcb,fd={self.cb_device.qemu_fd()}",
                "-device", f"ivshmem-doorbell,chardev=xpvcb,vectors={self.cb_device.vectors}"]

    def pass_fds(self):
        return [self.db_theirs.fileno(), self.com2_theirs.fileno(), self.cb_device.qemu_fd()]

    def after_launch(self) -> None:
        for s in (self.db_theirs, self.com2_theirs):
            s.close()
        self.cb_device.after_launch()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name=f"hvm-pv-{self.dom.domid}")
        self.thread.start()

    def connect_console(self, emit) -> None:
        self.pv_console.connect()
        self.pv_console.add_sink(emit)

    def stop(self) -> None:
        self.stopping = True
        for s in (self.db_ours, self.db_theirs, self.com2_ours, self.com2_theirs):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.cb_device.close()
        if self.pv_console is not None:
            with self.hv.lock:
                self.pv_console.disconnect()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(2)

    # ---- the doorbell ----
    def _serve(self) -> None:
        while not self.stopping:
            try:
                data = self.db_ours.recv(4096)
            except OSError:
                return
            if not data:
                return
            for vid in dict.fromkeys(data):         # each vCPU once per batch
                try:
                    self._handle(vid)
                except Exception:
                    log.exception("d%d: HVM hypercall service", self.dom.domid)

    def _handle(self, vid: int) -> None:
        dom = self.dom
        if vid >= len(dom.vcpus) or dom.ram is None:
            dom.log_once(f"badvcpu:{vid}", f"doorbell for vCPU {vid}, which does not exist")
            return
        mb = self.area + layout.PV_MBOX_PAGE * 4096 + vid * layout.MBOX_SIZE
        ram = self.ram
        req, resp, eax, ebx, ecx, edx, esi, edi, ebp, cr3, cr0, cr4, apic = \
            _MBOX.unpack(ram.read(mb, _MBOX.size))
        if req == resp:
            return                                  # nothing posted (or answered)
        vcpu = dom.vcpus[vid]
        vcpu.cr0, vcpu.cr3, vcpu.cr4 = cr0, cr3, cr4
        args = (ebx, ecx, edx, esi, edi, ebp)
        while True:
            with self.hv.lock:
                if not dom.alive:
                    return
                vcpu.in_call = True
                try:
                    ret = self.dispatch(vcpu, eax, args)
                finally:
                    vcpu.in_call = False
            if vcpu.again is None:
                break
            args = vcpu.again                       # a preempted batch goes on
            time.sleep(PREEMPT_PAUSE)
        if ret is NO_ANSWER:
            return
        ram.w32(mb + 8, ret & 0xFFFFFFFF)
        ram.fence()
        ram.w32(mb + 4, req)

    # ---- dispatch ----
    def dispatch(self, vcpu: HVMVcpu, nr: int, args) -> int:
        from ..hypercall import TABLE, Call, DomainCrash, GuestFault, _load_families
        if not TABLE:
            _load_families()
        self.calls += 1
        vcpu.calls += 1
        call = Call(vcpu, None, tuple(args) + (nr,))
        ret = self._dispatch(call, vcpu, nr, args)
        vcpu.again = call.again
        tracer = self.dom.tracer
        if tracer is not None:
            tracer.record(call, TABLE.get(nr), 0 if ret is NO_ANSWER else ret)
        return ret

    def _dispatch(self, call, vcpu: HVMVcpu, nr: int, args) -> int:
        from ..hypercall import TABLE, DomainCrash, GuestFault
        own = HVM_HYPERCALLS.get(nr)
        try:
            if own is not None:
                fn, nargs = own
                return fn(self, call, *args[:nargs])
            if nr in REUSED:
                fam = TABLE.get(nr)
                if fam is not None:
                    return fam.fn(call, *args[:fam.nargs])
            self.dom.log_once(f"nosys:{nr}", f"HVM hypercall {nr} "
                              f"({abi.HYPERCALLS.get(nr, 'unknown')}) is not available: -ENOSYS")
            return -ENOSYS
        except GuestFault:
            return -EFAULT
        except DomainCrash as e:
            self.hv.call_soon(self.dom.crash_from_hypercall, e.reason)
            return -EFAULT
        except Exception as e:                      # our bug: crash the domain, not us
            log.exception("d%d: hypercall %d", self.dom.domid, nr)
            self.hv.call_soon(self.dom.crash_from_hypercall, f"internal hypervisor error: {e!r}")
            return -ENOSYS

    # ---- events ----
    def raise_callback(self, vcpu: HVMVcpu) -> None:
        """vCPU 0's upcall is pending: raise the callback.  As on Xen,
        evtchn_upcall_mask is not looked at (it is not used in HVM mode)."""
        cb = self.params.get(HVM_PARAM_CALLBACK_IRQ, 0)
        if vcpu.vid != 0 or not cb or not self.ram.r8(vcpu.vcpu_info_pa + abi.VI_UPCALL_PENDING):
            return
        try:
            if cb >> 56 == CALLBACK_TYPE_VECTOR:
                self.cb_device.kick((cb & 0xFF) - layout.CB_VECTOR_BASE)
            else:
                self.com2_ours.send(b"\x01")
        except (OSError, IndexError):
            pass

    # ---- memory ----
    def copy(self, vcpu: HVMVcpu, va: int, n: int, data: Optional[bytes] = None):
        out = bytearray()
        off = 0
        while off < n:
            pa = translate(self.ram, vcpu.cr0, vcpu.cr3, vcpu.cr4, va + off, data is not None)
            chunk = min(n - off, 4096 - ((va + off) & 0xFFF))
            if pa is None or pa + chunk > self.ram.size or self._hidden(pa, chunk):
                return None
            if data is None:
                out += self.ram.read(pa, chunk)
            else:
                self.ram.write(pa, data[off:off + chunk])
            off += chunk
        return bytes(out) if data is None else True

    def _hidden(self, pa: int, n: int) -> bool:
        """The hypercall area's code and mailboxes are ours: a guest pointer
        into them is refused, so a hypercall cannot rewrite the stubs."""
        return layout.overlaps((pa, pa + n), (self.area, self.area + 4 * 4096))


# ---- the HVM hypercall families (Xen's hvm_hypercall_table subset) ----
def _sched_op(pv: PVDrivers, call, cmd, arg) -> int:
    if cmd == 0:                                    # SCHEDOP_yield
        return 0
    if cmd == 1:                                    # SCHEDOP_block: the guest will hlt
        return 0
    if cmd == 2:                                    # SCHEDOP_shutdown
        reason = call.read_u32(arg)
        name = abi.SHUTDOWN_NAMES.get(reason)
        if name is None:
            return -EINVAL
        pv.hv.call_soon(pv.dom.pv_shutdown, name)
        return NO_ANSWER
    return -ENOSYS


def _memory_op(pv: PVDrivers, call, cmd, arg) -> int:
    if cmd != XENMEM_add_to_physmap:
        return -ENOSYS
    a = call.read_struct(abi.xen_add_to_physmap, arg)
    dom = pv.dom
    if a["domid"] not in (abi.DOMID_SELF, dom.domid):
        return -EPERM
    gpfn, idx = a["gpfn"], a["idx"]
    if not pv.is_ram(gpfn):
        return -EINVAL                              # not the guest's RAM
    if a["space"] == XENMAPSPACE_shared_info:
        if idx != 0:
            return -EINVAL
        pv.place(SHARED_INFO, 0, gpfn)
        return 0
    if a["space"] == XENMAPSPACE_grant_table:
        # gnttab_get_shared_frame_mfn(): grow to idx + 1 frames if allowed;
        # a v1 table has no status frames (XENMAPIDX_grant_table_status)
        t = dom.gnttab
        if idx >= len(t.frames) and (idx >= t.max_frames or not t.grow(idx + 1)):
            return -EINVAL
        pv.place(GRANT, idx, gpfn)
        return 0
    return -EINVAL                                  # gmfn, gmfn_range, foreign: not here
def _hvm_op(pv: PVDrivers, call, op, arg) -> int:
    if op not in (HVMOP_set_param, HVMOP_get_param):
        return -ENOSYS
    p = call.read_struct(abi.xen_hvm_param, arg)
    if p["domid"] not in (abi.DOMID_SELF, pv.dom.domid):
        return -EPERM
    idx = p["index"]
    if idx >= HVM_NR_PARAMS:
        return -EINVAL
    if op == HVMOP_get_param:
        p["value"] = pv.params.get(idx, 0)
        call.write_struct(abi.xen_hvm_param, arg, p)
        return 0
    if idx not in GUEST_SETTABLE:
        return -EPERM
    val = p["value"]
    if idx == HVM_PARAM_CALLBACK_IRQ:
        kind = val >> 56
        if val == 0:
            pass                                    # callback off
        elif kind == CALLBACK_TYPE_GSI:
            if val & 0xFFFFFFFF != CALLBACK_GSI:
                return -EINVAL                      # only COM2's line can be raised
        elif kind == CALLBACK_TYPE_VECTOR:
            if not layout.CB_VECTOR_BASE <= val & 0xFF or val & 0x00FFFFFFFFFFFF00:
                return -EINVAL                      # an exception vector: cannot be raised
        else:
            return -ENOSYS                          # PCI INTx
        pv.params[idx] = val
        how = "off" if not val else f"GSI {val & 0xFFFFFFFF} (COM2)" if kind == CALLBACK_TYPE_GSI \
            else f"vector {val & 0xFF:#x} (MSI-X)"
        pv.dom.log(f"HVM callback: {how}")
        if val:
            pv.raise_callback(pv.dom.vcpus[0])
        return 0
    return -EPERM


# Xen's hvm_grant_table_op(): the commands an HVM guest may use
HVM_GNTTABOPS = {nr for nr, n in abi.GNTTABOP.items()
                 if n in ("query_size", "setup_table", "set_version", "get_version", "copy",
                          "map_grant_ref", "unmap_grant_ref", "swap_grant_ref")}


def _grant_table_op(pv: PVDrivers, call, cmd, uop, count) -> int:
    if cmd not in HVM_GNTTABOPS:
        return -ENOSYS
    from ..hypercall import TABLE
    return TABLE[abi.HYPERCALL_NR["grant_table_op"]].fn(call, cmd, uop, count)


# number -> (handler, number of guest arguments)
HVM_HYPERCALLS = {abi.HYPERCALL_NR["sched_op"]: (_sched_op, 2),
                  abi.HYPERCALL_NR["memory_op"]: (_memory_op, 2),
                  abi.HYPERCALL_NR["hvm_op"]: (_hvm_op, 2),
                  abi.HYPERCALL_NR["grant_table_op"]: (_grant_table_op, 3)}
# the PV families that work unchanged on an HVM domain
REUSED = {abi.HYPERCALL_NR[n] for n in ("xen_version", "console_io", "event_channel_op")}
