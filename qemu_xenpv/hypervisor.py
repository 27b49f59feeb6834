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
        # fn(old, new) after an on_reboot=restart made `new` (per instance:
        # a class-level list would pile callbacks up across hypervisors)
        self.on_domain_restart: List[Callable] = []
        # domid -> future done when its restart has finished; and the
        # destroy requests that came during one (applied once it is over)
        self._restarting: Dict[int, asyncio.Future] = {}
        self._destroy_after_restart: Dict[int, str] = {}
        self._restart_count: Dict[int, int] = {}
        self._guest_lines: Dict[int, bytearray] = {}
        self.loop = asyncio.new_event_loop()
        self._loop_ident: Optional[int] = None
        # the event loop thread is waiting for `lock` (vCPU threads, which
        # take it for every request, step back so it is not starved)
        self.loop_waiting = 0
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
        self._loop_ident = threading.get_ident()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # ---- plumbing ----
    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_ident

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

    def restart_domain(self, dom):
        """on_reboot=restart: a fresh build of the same configuration.

        Marks the domain id as restarting at once (so a destroy arriving
        before the returned coroutine runs waits for it and then applies to
        whatever the restart produced), and returns the coroutine that does
        the work: ``loop.create_task(hv.restart_domain(dom))``."""
        domid = dom.domid
        if domid not in self._restarting:
            self._restarting[domid] = self.loop.create_future()
        # a restarted domain may reboot again before this restart is over
        self._restart_count[domid] = self._restart_count.get(domid, 0) + 1
        return self._restart(dom)

    async def _restart(self, dom) -> None:
        domid = dom.domid
        try:
            await self._restart_body(dom)
        finally:
            self._restart_count[domid] -= 1
            if not self._restart_count[domid]:
                del self._restart_count[domid]
                fut = self._restarting.pop(domid, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def _restart_body(self, dom) -> None:
        Domain = self._domain_class(dom.config)
        await dom._teardown()
        reason = self._destroy_after_restart.pop(dom.domid, None)
        if reason is not None:                  # destroyed while going down
            self.dmesg(f"(XEN) d{dom.domid}: destroyed while rebooting")
            dom.end_reason = reason
            dom._notify_end()
            return
        opts = dict(accel=dom.accel, doorbell=dom.doorbell, gdb_port=dom.gdb_port,
                    scramble_p2m=dom.scramble_p2m)
        new = Domain(self, dom.domid, dom.config, **opts)
        new.on_end = dom.on_end
        new._end_waiters = dom._end_waiters
        new.console_port = dom.console_port
        if hasattr(dom, "xenpv_serial"):        # the daemon's handle: the same domain
            new.xenpv_serial = dom.xenpv_serial
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
            try:
                fn(dom, new)
            except Exception:
                log.exception("on_domain_restart")
        reason = self._destroy_after_restart.pop(dom.domid, None)
        if reason is not None:                  # destroyed while coming up
            await new.destroy(reason)

    async def destroy_domain(self, dom, reason: str = "destroyed") -> None:
        """Destroy a domain, also one in the middle of a reboot: the request
        waits until the restart is over and then applies to the domain the
        restart produced (Xen destroys the domain, whatever it is doing)."""
        domid = dom.domid
        for _ in range(100):
            fut = self._restarting.get(domid)
            if fut is None:
                break
            self._destroy_after_restart.setdefault(domid, reason)
            await asyncio.shield(fut)
            self._destroy_after_restart.pop(domid, None)
            cur = self.domains.get(domid)
            if cur is None or cur.state == "dead":
                return
            dom = cur
        await dom.destroy(reason)

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
            await self.destroy_domain(d, "destroyed")

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
        if not self._thread.is_alive():
            try:
                self.loop.close()
            except RuntimeError:
                pass
        if self.dmesg_file:
            self.dmesg_file.close()
            self.dmesg_file = None
