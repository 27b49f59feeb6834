"""A small world for back-end unit tests (no QEMU): a hypervisor with the
real XenStore, grant engine and event channels, and guest domains whose
RAM is real GuestRAM, plus the guest's side of a split driver (grants,
an unbound port, a front ring, its XenStore keys) done by hand."""

from __future__ import annotations

import struct
import threading
import time
import uuid
from types import SimpleNamespace

from qemu_xenpv import abi
from qemu_xenpv.evtchn import EventChannels
from qemu_xenpv.gnttab import GrantEngine, GrantTable
from qemu_xenpv.hypervisor import Dom0
from qemu_xenpv.vcpu import VCPU
from qemu_xenpv.xenstored import XenStored

SI_PA = 0x1000
STORE_MFN = 0x5
GT_MFN = 0x6
FIRST_FREE_MFN = 0x10


class FakeHV:
    def __init__(self):
        self.lock = threading.RLock()
        self.domains = {}
        self.dom0 = Dom0(self)
        self.lines = []
        self.soon = []
        self.grants = GrantEngine(lambda d: getattr(self.domain_by_id(d), "gnttab", None))
        self.xenstore = XenStored(self)

    def domain_by_id(self, domid):
        return self.dom0 if domid == 0 else self.domains.get(domid)

    def call_soon(self, fn, *args):
        # dom0 event consumers: run at once (the tests have no event loop)
        fn(*args)

    def on_loop_thread(self):
        return True                     # the test thread plays the event loop

    def dmesg(self, line):
        self.lines.append(line)


class FakeDomain:
    def __init__(self, hv, domid, ram, name="guest"):
        self.hv, self.domid, self.ram, self.name = hv, domid, ram, name
        self.uuid = uuid.uuid4()
        self.shared_info_pa = SI_PA
        self.config = SimpleNamespace(memory=ram.size >> 20, maxmem=0, disks=[])
        self.built = SimpleNamespace(store_mfn=STORE_MFN)
        self.store_evtchn = 1
        self.console = None
        self.devices = None
        self.alive = True
        self.kicks = []
        self.mmu = SimpleNamespace(owns=lambda mfn: 2 <= mfn < (ram.size >> 12))
        self.vcpus = [VCPU(self, 0, SimpleNamespace(estack=0x10000, priv=0x11000))]
        self.evtchn = EventChannels(hv, self)
        assert self.evtchn.alloc_unbound(0) == 1
        self.page_tables = set()
        self.gnttab = GrantTable(domid, ram, [GT_MFN], max_frames=1,
                                 owns=lambda mfn: FIRST_FREE_MFN <= mfn < (ram.size >> 12),
                                 get_writable=lambda mfn: mfn not in self.page_tables,
                                 put_writable=lambda mfn: None)
        self.next_ref = 8
        self.next_mfn = FIRST_FREE_MFN
        hv.domains[domid] = self
        hv.xenstore.domain_created(self)

    def kick(self, vid):
        self.kicks.append(vid)

    def on_virq_bound(self, *a):
        pass

    # ---- the guest's side ----
    def alloc_page(self) -> int:
        mfn = self.next_mfn
        self.next_mfn += 1
        self.ram.zero(mfn << 12, 4096)
        return mfn

    def grant(self, mfn, readonly=False, to=0) -> int:
        ref = self.next_ref
        self.next_ref += 1
        self.gnttab.write_entry(ref, abi.GTF_permit_access | (abi.GTF_readonly if readonly else 0),
                                to, mfn)
        return ref

    def grant_flags(self, ref) -> int:
        return self.gnttab.entry(ref)[0]

    def pending(self, port) -> bool:
        return self.ram.test_bit(SI_PA + abi.SI_EVTCHN_PENDING, port)

    def clear_pending(self, port) -> None:
        self.ram.test_and_clear_bit(SI_PA + abi.SI_EVTCHN_PENDING, port)

    def destroy(self):
        self.hv.grants.domain_destroyed(self.domid)
        self.hv.xenstore.domain_destroyed(self)
        with self.hv.lock:
            self.evtchn.reset()


class FrontRing:
    """The frontend's side of an io/ring.h ring over consecutive frames."""

    def __init__(self, dom, mfns, req_size, rsp_size):
        self.dom, self.ram = dom, dom.ram
        self.base = mfns[0] << 12
        self.mfns = mfns
        self.entry = max(req_size, rsp_size)
        n = (4096 * len(mfns) - 64) // self.entry
        self.nr = 1 << (n.bit_length() - 1)
        self.req_prod_pvt = 0
        self.rsp_cons = 0
        self.ram.w32(self.base + 4, 1)             # req_event
        self.ram.w32(self.base + 12, 1)            # rsp_event

    def _off(self, i):
        return 64 + (i & (self.nr - 1)) * self.entry

    def _pa(self, off):
        return (self.mfns[off >> 12] << 12) + (off & 0xFFF)

    def _write(self, off, data):
        while data:
            k = min(len(data), 4096 - (off & 0xFFF))
            self.ram.write(self._pa(off), data[:k])
            off, data = off + k, data[k:]

    def _read(self, off, n):
        out = b""
        while n:
            k = min(n, 4096 - (off & 0xFFF))
            out += self.ram.read(self._pa(off), k)
            off, n = off + k, n - k
        return out

    def put(self, data: bytes):
        """Queue a request (not yet visible: push())."""
        self._write(self._off(self.req_prod_pvt), data)
        self.req_prod_pvt += 1

    def push(self, prod=None):
        self.ram.w32(self.base, (self.req_prod_pvt if prod is None else prod) & 0xFFFFFFFF)

    @property
    def rsp_prod(self):
        return self.ram.r32(self.base + 8)

    def responses(self, size, want=1, timeout=5.0):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < want:
            while self.rsp_cons != self.rsp_prod:
                out.append(self._read(self._off(self.rsp_cons), size))
                self.rsp_cons += 1
            if len(out) >= want:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(out)} of {want} responses")
            time.sleep(0.002)
        self.ram.w32(self.base + 12, self.rsp_cons + 1)
        return out


def wait_for(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


U32 = struct.Struct("<I")
