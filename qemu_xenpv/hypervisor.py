"""The hypervisor core: the domain table, domain 0, the big lock, the
event loop thread that runs QMP, back ends and control connections, and
the hypervisor log (`qemu-xenpv dmesg`).

vCPU service threads handle hypercalls with the lock held; anything else
that touches domain state (back ends, control requests) takes it too,
the way Xen serialises on its domain locks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Callable, Dict, List, Optional

from . import abi
from .errors import XenPVError, MachineError
from .evtchn import EventChannels
from .shim import ShimImage

log = logging.getLogger("qemu_xenpv.hypervisor")


class Dom0:
    """Domain 0 is this process: it has event channels but no shared_info."""

    domid = 0
    name = "Domain-0"
    ram = None
    alive = True

    def __init__(self, hv):
        self.hv = hv
        self.vcpus = [None]
        self.evtchn = EventChannels(hv, self)
        from .gnttab import GrantTable
        self.gnttab = GrantTable(0)         # empty: domain 0 has no memory to grant

    def on_virq_bound(self, *a):
        pass


class Hypervisor:
    def __init__(self, dmesg_path: Optional[str] = None):
        self.lock = threading.RLock()
        self.domains: Dict[int, "Domain"] = {}
        self.dom0 = Dom0(self)
        self._next_domid = 1
        self._shim: Optional[ShimImage] = None
        self.dmesg_lines = collections.deque(maxlen=10000)
        self.dmesg_file = open(dmesg_path, "a", buffering=1) if dmesg_path else None
        self.on_domain_end: List[Callable] = []
        self._guest_lines: Dict[int, bytearray] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="hypervisor-loop", daemon=True)
        self._thread.start()
        self.started = time.time()
        self.dmesg(f"(XEN) qemu-xenpv hypervisor started")
        # inter-domain plumbing: grant tables and xenstored (issue 4)
        from .gnttab import GrantEngine
        from .xenstored import XenStored
        self.grants = GrantEngine(lambda domid: getattr(self.domain_by_id(domid), "gnttab", None))
        self.xenstore = XenStored(self)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # ---- plumbing ----
    def call_soon(self, fn: Callable, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def run(self, coro, timeout: Optional[float] = None):
        """Run a coroutine on the hypervisor loop from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def shim_image(self) -> ShimImage:
        if self._shim is None:
            self._shim = ShimImage()
        return self._shim

    def domain_by_id(self, domid: int):
        if domid == 0:
            return self.dom0
        return self.domains.get(domid)

    def find(self, ref: str):
        """A domain by name or id."""
        for d in self.domains.values():
            if d.name == ref or str(d.domid) == str(ref):
                return d
        return None

    # ---- the log ----
    def dmesg(self, line: str) -> None:
        stamp = f"[{time.time() - self.started:10.6f}] {line}"
        self.dmesg_lines.append(stamp)
        if self.dmesg_file:
            self.dmesg_file.write(stamp + "\n")

    def guest_console_io(self, dom, data: bytes) -> None:
        buf = self._guest_lines.setdefault(dom.domid, bytearray())
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            self.dmesg(f"(d{dom.domid}) " + line.decode(errors="replace").rstrip("\r"))
        if len(buf) > 4096:
            self.dmesg(f"(d{dom.domid}) " + buf.decode(errors="replace"))
            buf.clear()

    # ---- domains ----
    def _alloc_domid(self) -> int:
        while self._next_domid in self.domains:
            self._next_domid += 1
        d = self._next_domid
        self._next_domid += 1
        if self._next_domid >= abi.DOMID_FIRST_RESERVED:
            self._next_domid = 1
        return d

    @staticmethod
    def _domain_class(config):
        """PV Domain, or the HVM domain class for type = "hvm" configs."""
        if getattr(config, "hvm", False):
            from .hvm.domain import HVMDomain
            return HVMDomain
        from .domain import Domain
        return Domain

    async def create_domain(self, config, **opts):
        Domain = self._domain_class(config)
        if any(d.name == config.name for d in self.domains.values()):
            raise XenPVError(f"a domain named '{config.name}' already exists "
                             "(destroy it or choose another name)")
        with self.lock:
            domid = self._alloc_domid()
            dom = Domain(self, domid, config, **opts)
            self.domains[domid] = dom
        try:
            await dom.start()
        except BaseException:
            with self.lock:
                self.domains.pop(domid, None)
            raise
        self.dmesg(f"(XEN) d{domid}: '{dom.name}' created: {config.memory} MiB, "
                   f"{config.vcpus} vCPU, {dom.accel}, kernel {config.kernel}")
        return dom

    async def restart_domain(self, dom) -> None:
        """on_reboot=restart: a fresh build of the same configuration."""
        Domain = self._domain_class(dom.config)
        await dom._teardown()
        opts = dict(accel=dom.accel, doorbell=dom.doorbell, gdb_port=dom.gdb_port,
                    scramble_p2m=dom.scramble_p2m)
        new = Domain(self, dom.domid, dom.config, **opts)
        new.on_end = dom.on_end
        new._end_waiters = dom._end_waiters
        new.console_port = dom.console_port
        with self.lock:
            self.domains[dom.domid] = new
        self.dmesg(f"(XEN) d{dom.domid}: rebooting")
        try:
            await new.start()
        except XenPVError as e:
            self.dmesg(f"(XEN) d{dom.domid}: restart failed: {e}")
            new.end_reason = "crash"
            new._notify_end()
            return
        for fn in list(self.on_domain_restart):
            fn(dom, new)

    on_domain_restart: List[Callable] = []

    def domain_ended(self, dom) -> None:
        with self.lock:
            if self.domains.get(dom.domid) is dom and dom.state == "dead":
                self.domains.pop(dom.domid, None)
        self.dmesg(f"(XEN) d{dom.domid}: '{dom.name}' ended: {dom.end_reason}")
        for fn in list(self.on_domain_end):
            try:
                fn(dom)
            except Exception:
                log.exception("on_domain_end")

    async def destroy_all(self) -> None:
        for d in list(self.domains.values()):
            await d.destroy("destroyed")

    def shutdown(self) -> None:
        """Tear everything down (process exit)."""
        try:
            self.run(self.destroy_all(), timeout=15)
        except Exception:
            for d in list(self.domains.values()):
                if d.machine:
                    d.machine.cleanup()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if self.dmesg_file:
            self.dmesg_file.close()
            self.dmesg_file = None
