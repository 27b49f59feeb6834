"""Domain 0's xenstored: one XenStore engine (qemu_xenpv.xenstore) per
hypervisor, served

* to every guest over its ring page (start_info store_mfn) and store event
  channel, which domain 0 binds before the guest runs, as xenstored does on
  INTRODUCE (libxl__build_post -> xs_introduce_domain);
* to host tools over a Unix socket (``<run dir>/xenstored.sock``), plain
  xs_wire messages as xenstored's socket speaks them, each connection
  privileged (domain 0);
* to this process directly (the engine's domain-0 helpers).

The engine is used with ``hv.lock`` held.  A guest's ring is served inline,
in the vCPU thread whose EVTCHNOP_send kicked the store port (so the reply
is in the ring before that hypercall returns); Python watch callbacks and
socket output, which belong to the event loop, are handed to its thread.

At domain creation it writes the tree xl writes (libxl__domain_make,
libxl__build_post, the console device) with xl's permissions, then
introduces the domain (@introduceDomain); at destruction it removes that
tree and releases the domain (@releaseDomain).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Callable, Dict, Optional

from .xenstore import RingConnection, XenStore, XenStoreError
from .xenstore.wire import XENSTORE_PAYLOAD_MAX, XSD_SOCKMSG, XSD_SOCKMSG_SIZE

log = logging.getLogger("qemu_xenpv.xenstored")

SOCKET_NAME = "xenstored.sock"


class _Ring:
    __slots__ = ("ring", "port", "mfn", "evtchn")

    def __init__(self, ring, port, mfn, evtchn):
        self.ring, self.port, self.mfn, self.evtchn = ring, port, mfn, evtchn


def _ro(domid: int):
    """xl's "roperm": domain 0 owns it, the domain may read it."""
    return ["n0", f"r{domid}"]


def _rw(domid: int):
    """xl's "rwperm": the domain owns it (and only it may read it)."""
    return [f"n{domid}"]


class XenStored:
    def __init__(self, hv):
        self.hv = hv
        self.store = XenStore(hooks=self)
        self.rings: Dict[int, _Ring] = {}
        self.socket_path: Optional[Path] = None
        self.clients = 0
        self._server = None
        s = self.store
        s.schedule = self._on_loop
        s.write("/local/domain/0/name", "Domain-0")
        s.write("/local/domain/0/domid", "0")
        s.mkdir("/local/domain/0/backend")
        s.mkdir("/vm")
        s.mkdir("/libxl")

    # ------------------------------------------------------------------
    # domains
    # ------------------------------------------------------------------
    def domain_created(self, dom) -> None:
        """Write the domain's tree as xl does, then INTRODUCE it (binds the
        store event channel and starts serving its ring)."""
        n = dom.domid
        dp = f"/local/domain/{n}"
        vm = f"/vm/{dom.uuid}"
        lx = f"/libxl/{n}"
        built = dom.built
        with self.hv.lock:
            s = self.store
            for path, perms in ((dp, _ro(n)), (vm, _ro(n)), (lx, ["n0"]),
                                (f"{lx}/device", ["n0"])):
                self._rm(path)
                s.mkdir(path)
                s.set_perms(path, perms)
            s.write(f"{lx}/type", "pv")
            s.write(f"{dp}/vm", vm)
            s.write(f"{dp}/name", dom.name)
            s.write(f"{vm}/uuid", str(dom.uuid))
            s.write(f"{vm}/name", dom.name)
            for sub in ("cpu", "memory", "device", "control"):
                s.mkdir(f"{dp}/{sub}")
                s.set_perms(f"{dp}/{sub}", _ro(n))
                if sub == "device":
                    # libxl (xend_suspend_evtchn_compat off, its default): the
                    # node where the guest publishes its suspend event channel;
                    # device/suspend inherits device's permissions
                    s.mkdir(f"{dp}/device/suspend/event-channel")
                    s.set_perms(f"{dp}/device/suspend/event-channel", _rw(n))
            for sub in ("control/shutdown", "control/feature-poweroff", "control/feature-reboot",
                        "control/feature-suspend", "control/sysrq", "data", "drivers",
                        "feature", "attr", "error"):
                s.mkdir(f"{dp}/{sub}")
                s.set_perms(f"{dp}/{sub}", _rw(n))
            s.write(f"{dp}/control/platform-feature-multiprocessor-suspend", "1")
            s.write(f"{dp}/control/platform-feature-xs_reset_watches", "1")
            kib = dom.config.memory * 1024
            maxkib = (dom.config.maxmem or dom.config.memory) * 1024
            s.write(f"{dp}/memory/static-max", str(maxkib))
            s.write(f"{dp}/memory/target", str(kib))
            s.write(f"{dp}/domid", str(n))
            s.write(f"{dp}/store/port", str(dom.store_evtchn))
            s.write(f"{dp}/store/ring-ref", str(built.store_mfn))
            for i in range(len(dom.vcpus)):
                s.write(f"{dp}/cpu/{i}/availability", "online")
            console = getattr(dom, "console", None)
            if console is not None and hasattr(console, "xenstore_nodes"):
                for path, value, perms in console.xenstore_nodes():
                    if value is None:
                        s.mkdir(path)
                    else:
                        s.write(path, value)
                    if perms:
                        s.set_perms(path, perms)
            s.introduce_domain(n, built.store_mfn, dom.store_evtchn)

    def domain_destroyed(self, dom) -> None:
        """Remove what xl removes at destroy and RELEASE the domain
        (@releaseDomain); the ring page is let go before the RAM goes."""
        n = dom.domid
        with self.hv.lock:
            s = self.store
            for path in (f"/local/domain/{n}", f"/vm/{dom.uuid}", f"/libxl/{n}"):
                self._rm(path)
            try:
                kinds = s.directory("/local/domain/0/backend")
            except XenStoreError:
                kinds = []
            for kind in kinds:
                self._rm(f"/local/domain/0/backend/{kind}/{n}")
            try:
                s.release_domain(n)
            except XenStoreError:
                pass
            self._close_ring(n)

    def _rm(self, path: str) -> None:
        try:
            self.store.rm(path)
        except XenStoreError as e:
            if e.errno != "ENOENT":
                raise

    # ---- engine hooks: INTRODUCE / RELEASE ----
    def introduce(self, domid: int, mfn: int, port: int) -> None:
        dom = self.hv.domains.get(domid)
        if dom is None or dom.ram is None:
            raise XenStoreError("ENOENT", f"no domain {domid}")
        old = self.rings.get(domid)
        if old is not None and (old.mfn, old.evtchn) == (mfn, port):
            return                          # re-introduce: the engine resets the ring
        mmu = getattr(dom, "mmu", None)
        if mmu is not None and not mmu.owns(mfn):
            raise XenStoreError("EINVAL", f"frame {mfn:#x} is not dom{domid}'s")
        if old is not None:
            self._close_ring(domid)
        evtchn = self.hv.dom0.evtchn
        dport = evtchn.dom0_bind(domid, port, lambda _p, d=domid: self._process(d), inline=True)
        if dport < 0:
            raise XenStoreError("EINVAL", f"cannot bind dom{domid} port {port} ({dport})")
        conn = self.store.connect(domid)
        ring = RingConnection(self.store, conn, dom.ram.view(mfn << 12, 4096),
                              notify=lambda: evtchn.send(dport), on_error=self._ring_error)
        self.rings[domid] = _Ring(ring, dport, mfn, port)
        self.hv.call_soon(self._process, domid)

    def release(self, domid: int) -> None:
        self._close_ring(domid)

    def _close_ring(self, domid: int) -> None:
        r = self.rings.pop(domid, None)
        if r is None:
            return
        r.ring.close()
        if self.hv.dom0.evtchn.ports[r.port].state:
            self.hv.dom0.evtchn.close(r.port)

    def _process(self, domid: int) -> None:
        with self.hv.lock:
            r = self.rings.get(domid)
            if r is None:
                return
            r.ring.process()
            again = r.ring.more_to_do
        if again:                           # fairness: others get a turn first
            self.hv.call_soon(self._process, domid)

    def _on_loop(self, func, *args) -> None:
        """Run func(*args) with hv.lock held on the event loop thread: now if
        this is that thread, else as soon as it can."""
        if self.hv.on_loop_thread():
            func(*args)
            return

        def run():
            hv = self.hv
            hv.loop_waiting += 1                # vCPU threads let us in first
            try:
                with hv.lock:
                    func(*args)
            finally:
                hv.loop_waiting -= 1
        self.hv.call_soon(run)

    def _ring_error(self, ring, code: int, reason: str) -> None:
        self.hv.dmesg(f"(XEN) d{ring.conn.domid}: xenstore: ring broken "
                      f"(error {code}): {reason}; connection ignored")

    # ------------------------------------------------------------------
    # domain 0 in this process
    # ------------------------------------------------------------------
    def read(self, path: str) -> Optional[bytes]:
        with self.hv.lock:
            try:
                return self.store.read(path)
            except XenStoreError as e:
                if e.errno == "ENOENT":
                    return None
                raise

    def write(self, path: str, value) -> None:
        with self.hv.lock:
            self.store.write(path, value)

    async def wait_for(self, path: str, done: Callable[[Optional[bytes]], bool],
                       timeout: Optional[float]) -> bool:
        """Watch ``path`` until ``done(value)`` (value None: no node), or the
        timeout passes (False)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        token = f"qemu-xenpv-wait-{id(fut)}"

        def fired(_path, _token):
            if not fut.done() and done(self.read(path)):
                fut.set_result(True)

        with self.hv.lock:
            self.store.watch(path, token, fired)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            with self.hv.lock:
                try:
                    self.store.unwatch(path, token)
                except XenStoreError:
                    pass

    # ------------------------------------------------------------------
    # the Unix socket for host tools
    # ------------------------------------------------------------------
    async def serve_socket(self, path: Path) -> None:
        path = Path(path)
        if path.exists():
            path.unlink()
        self._server = await asyncio.start_unix_server(self._client, path=str(path))
        os.chmod(path, 0o600)
        self.socket_path = path

    async def close_socket(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.socket_path is not None:
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One socket connection: privileged, as xenstored's socket is."""
        self.clients += 1
        with self.hv.lock:
            conn = self.store.connect(0, privileged=True)

        def flush(c) -> None:
            if not self.hv.on_loop_thread():            # a guest's inline request
                self._on_loop(flush, c)
                return
            msgs = c.take()
            if not writer.is_closing():
                writer.write(b"".join(m.pack() for m in msgs))

        conn.on_output = flush
        try:
            while True:
                hdr = await reader.readexactly(XSD_SOCKMSG_SIZE)
                msg_type, req_id, tx_id, length = XSD_SOCKMSG.unpack(hdr)
                if length > XENSTORE_PAYLOAD_MAX:
                    log.warning("xenstored socket client sent %d payload bytes: closed", length)
                    break
                payload = await reader.readexactly(length)
                with self.hv.lock:
                    self.store.handle(conn, msg_type, req_id, tx_id, payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.clients -= 1
            with self.hv.lock:
                conn.on_output = None
                self.store.disconnect(conn)
            writer.close()
