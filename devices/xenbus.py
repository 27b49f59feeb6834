"""The split-driver mechanism every back end shares (blkback, netback):
XenStore directories, the XenbusState machine, ring grants, the event
channel and the io/ring.h shared ring -- in one place.

A back end is a subclass of :class:`BackendDevice`.  Its life, driven by
this module exactly as Linux's xenbus back-end core and libxl drive it:

1. ``create()`` (hv.lock held, before or while the guest runs) writes
   ``/local/domain/0/backend/<kind>/<domid>/<devid>`` (``n0,r<domid>``:
   frontend, frontend-id, online = 1, state, plus ``backend_entries()``)
   and ``/local/domain/<domid>/device/<kind>/<devid>`` (``n<domid>,r0``:
   backend, backend-id, state = 1, plus ``frontend_entries()``), writes
   ``features()`` and switches to **InitWait** (2).  It watches the
   frontend's ``state``.
2. When the frontend says **Initialised** (3) or **Connected** (4) while we
   are in InitWait, ``connect(fe)`` is called: read the frontend's keys with
   ``fe`` (:class:`Frontend`, every value hostile: use ``fe.read_int``),
   map the ring with :meth:`BackendDevice.map_ring` (``ring-ref`` or
   ``ring-page-order`` + ``ring-ref0..N``), bind the event channel with
   :meth:`BackendDevice.bind_evtchn`.  It returns the keys to publish
   before **Connected** (4) is written (e.g. ``sectors``).  Raising
   :class:`XenbusError` refuses the frontend: the message goes into the
   backend's ``error`` node and the device goes to Closing (5).
3. Frontend **Closing** (5): we switch to Closing.  Frontend **Closed** (6)
   or its ``state`` node gone: ``disconnect()`` then **Closed** (6).  A
   frontend that goes back to **Initialising** (1) after that finds us in
   InitWait again (reconnect), as Mini-OS's ``shutdown_blkfront`` expects.
4. ``fail(reason)`` is for a hostile frontend (ring indices garbage ...):
   disconnect now, publish the error, Closing.  Other devices and domains
   are not affected.
5. Hot unplug (``await remove()``): online = 0 and Closing, wait (10 s,
   libxl's timeout) for the frontend to close, then force; the XenStore
   directories go, then ``release()`` runs.  Domain destruction
   (``await destroy()``): disconnect at once, remove the directories,
   ``release()``.

Subclass hooks (all optional except ``kind``):

=====================  =======================================================
``kind``               class attribute: "vbd", "vif" (directory names)
``backend_entries()``  {key: value} for the backend directory at creation
``frontend_entries()`` {key: value} for the frontend directory at creation
``features()``         {key: value} published before InitWait
``connect(fe)``        map rings, bind the event channel; returns the keys to
                       publish before Connected; raise XenbusError to refuse
``disconnect()``       undo connect; hv.lock is held: never block here; give
                       long-lived mappings to :meth:`retire_maps` (the ring
                       and the event channel are undone by the base class)
``release()``          the device is gone for good: close files; runs in an
                       executor thread WITHOUT hv.lock, after disconnect and
                       after every worker thread returned
``info()``             a dict for ``block-list`` / ``network-list``
``check_protocol(p)``  raise XenbusError for a ``protocol`` key the rings cannot
                       be read with (default: absent or ``x86_32-abi``)
``describe_connection()``  text for the "connected (...)" log line
=====================  =======================================================

Threads: XenStore watch callbacks and every state change run with hv.lock
held (the XenStore engine is single-threaded under that lock).  A back end
that does slow work (disk I/O) does it in a :class:`Worker` thread, which it
registers with :meth:`BackendDevice.add_worker` so that teardown joins it
before ``release()`` and before the domain's RAM goes away.  The worker
takes hv.lock only around grant maps, event sends and XenStore access, and
must check :attr:`BackendDevice.connection` (a token that changes on every
disconnect) before it publishes anything on a ring.  Each pass of a worker
over the ring runs inside ``with self.io():``: a disconnect meanwhile does
not unmap anything the worker may still touch (the ring, long-lived
mappings given to :meth:`BackendDevice.retire_maps`) until the pass ends --
otherwise a hostile frontend could close the device and reuse a page (as a
page table, say) while a late response or a read was still being written
into it.

Closing, as Linux's back ends and Mini-OS's frontends do it: frontend
Closing -> we go Closing (not Closed); frontend Closed -> we disconnect and
go Closed.  So a frontend that closes on its own writes Closing, waits for
our state >= Closing, then writes Closed (and may wait for our Closed).

Rings: :class:`BackRing` is the back-end side of ``io/ring.h`` over the
mapped pages (one page or several, possibly non-contiguous frames); it
validates the frontend's ``req_prod`` (:class:`RingError` when it runs
more than a ring ahead) and copies each request out of shared memory
before it is parsed (the frontend may change it meanwhile).

Every domain has a :class:`DeviceSet` (``dom.devices``): the domain creates
its configured devices through the factories registered with
:func:`register_backend` and tears them down with ``await shutdown()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import struct
import threading
from typing import Callable, Dict, List, Optional, Sequence

from qemu_xenpv.machine.ram import store32

log = logging.getLogger("qemu_xenpv.xenbus")

PAGE = 4096
REMOVE_TIMEOUT = 10.0           # libxl's LIBXL_DESTROY_TIMEOUT for a frontend to close


class XenbusState(enum.IntEnum):
    """xen/include/public/io/xenbus.h"""
    Unknown = 0
    Initialising = 1
    InitWait = 2
    Initialised = 3
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8


class XenbusError(Exception):
    """The frontend gave us something we refuse (a bad key, a bad grant)."""


class RingError(Exception):
    """The frontend broke the shared-ring protocol (index garbage)."""


def backend_path(kind: str, domid: int, devid: int, backend_domid: int = 0) -> str:
    return f"/local/domain/{backend_domid}/backend/{kind}/{domid}/{devid}"


def frontend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/{kind}/{devid}"


def parse_uint(value: Optional[bytes], limit: int = 0xFFFFFFFF) -> Optional[int]:
    """A decimal unsigned integer as frontends write them ("%u"), or None
    for anything else (missing, empty, signs, hex, junk, over ``limit``)."""
    if value is None:
        return None
    s = value.strip()
    if not s or len(s) > 20 or not s.isdigit():
        return None
    n = int(s)
    return n if n <= limit else None


# ---------------------------------------------------------------------------
# the frontend's directory, read as domain 0
# ---------------------------------------------------------------------------
class Frontend:
    """Read access to a frontend's XenStore directory (hostile values)."""

    def __init__(self, xenstore, path: str, domid: int):
        self.xs = xenstore
        self.path = path
        self.domid = domid

    def read(self, key: str) -> Optional[bytes]:
        return self.xs.read(f"{self.path}/{key}")

    def read_str(self, key: str, default: Optional[str] = None) -> Optional[str]:
        v = self.read(key)
        if v is None:
            return default
        return v.decode("ascii", errors="replace")

    def read_int(self, key: str, default: Optional[int] = None,
                 limit: int = 0xFFFFFFFF) -> Optional[int]:
        """The key as an unsigned integer; ``default`` if it is missing;
        XenbusError if it is there but not a number within ``limit``."""
        v = self.read(key)
        if v is None:
            return default
        n = parse_uint(v, limit)
        if n is None:
            raise XenbusError(f"frontend key {key} = {v[:40]!r} is not a number "
                              f"(0..{limit})")
        return n

    def state(self) -> XenbusState:
        n = parse_uint(self.read("state"), 8)
        return XenbusState(n) if n is not None else XenbusState.Unknown


# ---------------------------------------------------------------------------
# mapped pages and the shared ring (io/ring.h)
# ---------------------------------------------------------------------------
class Pages:
    """Several mapped 4 KiB pages seen as one byte range (a multi-page ring
    is contiguous only in the frontend's virtual address space)."""

    def __init__(self, views: Sequence[memoryview]):
        self.views = list(views)
        self.size = PAGE * len(self.views)
        self.first = self.views[0]

    def read(self, off: int, n: int) -> bytes:
        p, o = divmod(off, PAGE)
        if o + n <= PAGE:
            return bytes(self.views[p][o:o + n])
        out = bytearray()
        while n:
            p, o = divmod(off, PAGE)
            k = min(n, PAGE - o)
            out += self.views[p][o:o + k]
            off += k
            n -= k
        return bytes(out)

    def write(self, off: int, data: bytes) -> None:
        n = len(data)
        p, o = divmod(off, PAGE)
        if o + n <= PAGE:
            self.views[p][o:o + n] = data
            return
        done = 0
        while done < n:
            p, o = divmod(off + done, PAGE)
            k = min(n - done, PAGE - o)
            self.views[p][o:o + k] = data[done:done + k]
            done += k


_U32 = struct.Struct("<I")
RING_HEADER = 64                # req_prod, req_event, rsp_prod, rsp_event, pvt, pad
REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT = 0, 4, 8, 12
M32 = 0xFFFFFFFF


def ring_size(nbytes: int, entry_size: int) -> int:
    """__RING_SIZE: the largest power of two of entries after the header."""
    n = (nbytes - RING_HEADER) // entry_size
    if n <= 0:
        return 0
    return 1 << (n.bit_length() - 1)


def _fence() -> None:
    try:
        from qemu_xenpv.machine import native
        _fence.impl = native.lib().fence
    except Exception:                       # unit tests without the helper: the GIL orders
        _fence.impl = lambda: None
    _fence.impl()


class BackRing:
    """The back end's side of a shared ring: consume requests, produce
    responses (BACK_RING_ATTACH, RING_GET_REQUEST, RING_PUSH_RESPONSES_AND_
    CHECK_NOTIFY, RING_FINAL_CHECK_FOR_REQUESTS).  Entries are slots of
    max(req_size, rsp_size) bytes after the 64-byte header."""

    def __init__(self, pages: Pages, req_size: int, rsp_size: int):
        self.pages = pages
        self.hdr = pages.first
        self.req_size, self.rsp_size = req_size, rsp_size
        self.entry = max(req_size, rsp_size)
        self.nr_ents = ring_size(pages.size, self.entry)
        if self.nr_ents == 0:
            raise ValueError("ring too small")
        # BACK_RING_ATTACH: continue where the responses are
        start = self._r(RSP_PROD)
        self.req_cons = start
        self.rsp_prod_pvt = start
        self.fence = getattr(_fence, "impl", None) or _fence

    def _r(self, off: int) -> int:
        return _U32.unpack_from(self.hdr, off)[0]

    def _w(self, off: int, v: int) -> None:
        store32(self.hdr, off, v)           # one store: the frontend reads it meanwhile

    @property
    def req_prod(self) -> int:
        return self._r(REQ_PROD)

    def unconsumed(self) -> int:
        """Requests waiting (RING_HAS_UNCONSUMED_REQUESTS), limited to the
        response slots free; RingError if req_prod is garbage
        (RING_REQUEST_PROD_OVERFLOW: more than a ring ahead of our responses)."""
        rp = self.req_prod
        if (rp - self.rsp_prod_pvt) & M32 > self.nr_ents:
            raise RingError(f"req_prod {rp} is more than {self.nr_ents} ahead of "
                            f"rsp_prod {self.rsp_prod_pvt}")
        self.fence()                        # rmb: the requests after the index
        req = (rp - self.req_cons) & M32
        free = self.nr_ents - ((self.req_cons - self.rsp_prod_pvt) & M32)
        return max(0, min(req, free))

    def take_request(self) -> bytes:
        """A private copy of the next request (consumed)."""
        i = self.req_cons & (self.nr_ents - 1)
        data = self.pages.read(RING_HEADER + i * self.entry, self.req_size)
        self.req_cons = (self.req_cons + 1) & M32
        return data

    def put_response(self, data: bytes) -> None:
        i = self.rsp_prod_pvt & (self.nr_ents - 1)
        self.pages.write(RING_HEADER + i * self.entry, data[:self.rsp_size])
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & M32

    def push_responses(self) -> bool:
        """Publish responses; True if the frontend asked to be notified."""
        old = self._r(RSP_PROD)
        new = self.rsp_prod_pvt
        self.fence()                        # wmb: responses before the index
        self._w(RSP_PROD, new)
        self.fence()                        # mb: index before reading rsp_event
        ev = self._r(RSP_EVENT)
        return ((new - ev) & M32) < ((new - old) & M32)

    def final_check(self) -> bool:
        """RING_FINAL_CHECK_FOR_REQUESTS: True if there is more to do now;
        otherwise req_event is armed so the frontend will notify us."""
        if self.unconsumed():
            return True
        self._w(REQ_EVENT, self.req_cons + 1)
        self.fence()
        return bool(self.unconsumed())


# ---------------------------------------------------------------------------
# a thread for slow work
# ---------------------------------------------------------------------------
class Worker:
    """A thread that runs ``fn()`` after each ``kick()`` (kicks coalesce);
    ``fn`` returns True to be run again at once."""

    def __init__(self, name: str, fn: Callable[[], bool]):
        self.fn = fn
        self._ev = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def kick(self, *_args) -> None:
        self._ev.set()

    def stop(self) -> None:
        self._stop = True
        self._ev.set()

    @property
    def stopping(self) -> bool:
        return self._stop

    def join(self, timeout: Optional[float] = None) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._ev.wait()
            self._ev.clear()
            if self._stop:
                return
            try:
                while not self._stop and self.fn():
                    pass
            except Exception:
                log.exception("%s failed", self.thread.name)


# ---------------------------------------------------------------------------
# the back-end device
# ---------------------------------------------------------------------------
class BackendDevice:
    kind = ""                       # "vbd", "vif"

    def __init__(self, dom, devid: int):
        self.dom = dom
        self.hv = dom.hv
        self.domid = dom.domid
        self.devid = devid
        self.be_path = backend_path(self.kind, self.domid, devid)
        self.fe_path = frontend_path(self.kind, self.domid, devid)
        self.state = XenbusState.Unknown
        self.fe = Frontend(self.hv.xenstore, self.fe_path, self.domid)
        self.connection = 0             # bumped by every disconnect (stale workers notice)
        self.connected = False
        self.removing = False
        self.gone = False
        self.error: Optional[str] = None
        self.ring_maps: List = []
        self.port = 0                   # our (domain 0) event channel port
        self.workers: List[Worker] = []
        self.io_lock = threading.Lock()     # held by a worker during a pass (io())
        self._stale: List = []              # mappings to unmap when no pass runs
        self._token = f"xenbus-{self.kind}-{self.domid}-{devid}-{id(self)}"
        self._watching = False

    # ---- hooks for subclasses ----
    def backend_entries(self) -> Dict[str, object]:
        return {}

    def frontend_entries(self) -> Dict[str, object]:
        return {}

    def features(self) -> Dict[str, object]:
        return {}

    def connect(self, fe: Frontend) -> Dict[str, object]:
        raise XenbusError("this back end cannot connect")

    def disconnect(self) -> None:
        pass

    def release(self) -> None:
        pass

    def info(self) -> dict:
        return {"kind": self.kind, "domid": self.domid, "devid": self.devid,
                "state": int(self.state), "frontend_state": int(self.fe_state()),
                "error": self.error}

    # ---- XenStore helpers (domain 0) ----
    @property
    def store(self):
        return self.hv.xenstore.store

    def fe_state(self) -> XenbusState:
        with self.hv.lock:
            return self.fe.state()

    def write_backend(self, entries: Dict[str, object]) -> None:
        with self.hv.lock:
            for k, v in entries.items():
                self.store.write(f"{self.be_path}/{k}", str(v))

    def _switch(self, state: XenbusState) -> None:
        """xenbus_switch_state()."""
        if state == self.state:
            return
        self.state = state
        with self.hv.lock:
            if not self.gone:
                self.store.write(f"{self.be_path}/state", str(int(state)))

    # ---- creation ----
    def create(self) -> None:
        """Write both directories as libxl does, watch the frontend, go to
        InitWait.  Raises XenStoreError if the directories cannot be made."""
        n = self.domid
        with self.hv.lock:
            s = self.store
            for path in (self.be_path, self.fe_path):
                if s.exists(path):
                    s.rm(path)
            with s.transaction() as t:
                t.mkdir(self.be_path)
                t.set_perms(self.be_path, ["n0", f"r{n}"])
                t.mkdir(self.fe_path)
                t.set_perms(self.fe_path, [f"n{n}", "r0"])
                for k, v in {"frontend": self.fe_path, "frontend-id": n, "online": 1,
                             "state": int(XenbusState.Initialising),
                             **self.backend_entries()}.items():
                    t.write(f"{self.be_path}/{k}", str(v))
                for k, v in {"backend": self.be_path, "backend-id": 0,
                             "state": int(XenbusState.Initialising),
                             **self.frontend_entries()}.items():
                    t.write(f"{self.fe_path}/{k}", str(v))
            self.state = XenbusState.Initialising
            self.write_backend(self.features())
            self._switch(XenbusState.InitWait)
            s.watch(f"{self.fe_path}/state", self._token, self._on_watch)
            self._watching = True

    def _on_watch(self, _path: str, _token: str) -> None:
        with self.hv.lock:
            if self.gone:
                return
            try:
                self.frontend_changed(self.fe.state())
            except Exception:
                log.exception("d%d %s/%d: frontend_changed", self.domid, self.kind, self.devid)

    # ---- the state machine (hv.lock held) ----
    def frontend_changed(self, fs: XenbusState) -> None:
        S = XenbusState
        if fs == S.Initialising:
            if self.state == S.Closing and not self.removing:
                # its Closed came and went between two looks at the state
                # (watches report the node, not every value it held)
                self._do_disconnect()
                self._switch(S.Closed)
            if self.state == S.Closed and not self.removing:
                self.error = None
                self._switch(S.InitWait)            # the frontend reconnects
        elif fs in (S.Initialised, S.Connected):
            if self.state == S.InitWait and not self.removing:
                self._do_connect()
        elif fs == S.Closing:
            if self.state not in (S.Closing, S.Closed):
                self._switch(S.Closing)
        elif fs in (S.Closed, S.Unknown):
            self._do_disconnect()
            self._switch(S.Closed)

    def _do_connect(self) -> None:
        try:
            proto = self.fe.read_str("protocol")
            self.check_protocol(proto)
            keys = self.connect(self.fe) or {}
        except XenbusError as e:
            self._do_disconnect()
            self._publish_error(str(e))
            self._switch(XenbusState.Closing)
            return
        except Exception as e:
            log.exception("d%d %s/%d: connect", self.domid, self.kind, self.devid)
            self._do_disconnect()
            self._publish_error(f"back end failure: {e}")
            self._switch(XenbusState.Closing)
            return
        self.connected = True
        self.write_backend(keys)
        self._switch(XenbusState.Connected)
        self.log(f"connected ({self.describe_connection()})")

    def check_protocol(self, proto: Optional[str]) -> None:
        """Rings are laid out for x86_32 (io/protocols.h "x86_32-abi"); a
        frontend without the key is native, i.e. x86_32 here."""
        if proto not in (None, "x86_32-abi"):
            raise XenbusError(f"protocol '{proto}' is not supported "
                              "(this back end serves x86_32-abi)")

    def describe_connection(self) -> str:
        return f"event channel {self.port}"

    def _do_disconnect(self) -> None:
        self.connection += 1
        was = self.connected
        self.connected = False
        try:
            self.disconnect()
        except Exception:
            log.exception("d%d %s/%d: disconnect", self.domid, self.kind, self.devid)
        self.unmap_ring()
        self.close_evtchn()
        if was:
            self.log("disconnected")

    def _publish_error(self, msg: str) -> None:
        self.error = msg
        self.log(f"error: {msg}")
        with self.hv.lock:
            if not self.gone:
                self.store.write(f"{self.be_path}/error", msg)

    def fail(self, reason: str) -> None:
        """A hostile or broken frontend: stop serving it now (xenbus_dev_fatal)."""
        with self.hv.lock:
            if self.gone or self.state in (XenbusState.Closing, XenbusState.Closed):
                return
            self._do_disconnect()
            self._publish_error(reason)
            self._switch(XenbusState.Closing)

    def log(self, msg: str) -> None:
        self.hv.dmesg(f"(XEN) d{self.domid}: {self.kind} {self.devid}: {msg}")

    # ---- rings and event channels (hv.lock held) ----
    def ring_refs(self, fe: Frontend, base: str = "ring-ref",
                  order_key: Optional[str] = "ring-page-order", max_order: int = 0) -> List[int]:
        """The grant references of a ring: ``base`` for one page, or
        ``<order_key>`` = n and ``<base>0 .. <base>(2^n - 1)``."""
        order = fe.read_int(order_key, 0, limit=64) if order_key else 0
        if order > max_order:
            raise XenbusError(f"{order_key} {order} is more than max-ring-page-order {max_order}")
        if order == 0:
            ref = fe.read_int(base)
            if ref is None:
                ref = fe.read_int(f"{base}0")
            if ref is None:
                raise XenbusError(f"frontend wrote no {base}")
            return [ref]
        refs = []
        for i in range(1 << order):
            ref = fe.read_int(f"{base}{i}")
            if ref is None:
                raise XenbusError(f"frontend wrote no {base}{i} (ring-page-order {order})")
            refs.append(ref)
        return refs

    def map_ring(self, refs: Sequence[int]) -> Pages:
        """Map the ring's pages writable (kept in ``ring_maps`` until
        :meth:`unmap_ring`); XenbusError if a grant is refused."""
        from qemu_xenpv.gnttab import GrantError
        maps = []
        with self.hv.lock:
            try:
                for ref in refs:
                    maps.append(self.hv.grants.map_grant_ref(self.domid, ref, readonly=False))
            except GrantError as e:
                for m in maps:
                    self.hv.grants.unmap_grant_ref(m)
                raise XenbusError(f"cannot map ring grant {ref}: {e}") from None
        self.ring_maps.extend(maps)
        return Pages([m.view for m in maps])

    def unmap_ring(self) -> None:
        maps, self.ring_maps = self.ring_maps, []
        self.retire_maps(maps)

    def retire_maps(self, maps) -> None:
        """Unmap these grant mappings as soon as no worker pass is running
        (at once if none is)."""
        with self.hv.lock:
            self._stale.extend(maps)
            if self.io_lock.acquire(blocking=False):
                try:
                    self._release_stale()
                finally:
                    self.io_lock.release()

    def _release_stale(self) -> None:
        maps, self._stale = self._stale, []
        for m in maps:
            try:
                self.hv.grants.unmap_grant_ref(m)
            except Exception:
                pass

    @contextlib.contextmanager
    def io(self):
        """A worker's pass over the ring and the mappings; yields the
        connection token to check before publishing anything."""
        self.io_lock.acquire()
        try:
            yield self.connection
        finally:
            if self._stale:
                with self.hv.lock:
                    self._release_stale()
            self.io_lock.release()

    def bind_evtchn(self, remote_port: int, consumer: Callable[[int], None]) -> int:
        """EVTCHNOP_bind_interdomain to the frontend's unbound port; ``consumer``
        runs on the hypervisor loop for each event.  XenbusError on failure."""
        with self.hv.lock:
            p = self.hv.dom0.evtchn.dom0_bind(self.domid, remote_port, consumer)
        if p < 0:
            raise XenbusError(f"cannot bind event channel {remote_port} (error {p})")
        self.port = p
        return p

    def notify(self, connection: Optional[int] = None) -> None:
        """Send an event to the frontend (unless ``connection`` is stale)."""
        with self.hv.lock:
            if self.port > 0 and (connection is None or connection == self.connection):
                self.hv.dom0.evtchn.send(self.port)

    def close_evtchn(self) -> None:
        with self.hv.lock:
            if self.port > 0:
                ch = self.hv.dom0.evtchn.ports[self.port]
                if ch.state:
                    self.hv.dom0.evtchn.close(self.port)
                self.port = 0

    def add_worker(self, name: str, fn: Callable[[], bool]) -> Worker:
        w = Worker(f"{self.kind}-d{self.domid}-{self.devid}-{name}", fn)
        self.workers.append(w)
        return w

    # ---- teardown ----
    def _remove_nodes(self) -> None:
        with self.hv.lock:
            self.gone = True
            if self._watching:
                try:
                    self.store.unwatch(f"{self.fe_path}/state", self._token)
                except Exception:
                    pass
                self._watching = False
            for path in (self.fe_path, self.be_path):
                try:
                    if self.store.exists(path):
                        self.store.rm(path)
                except Exception:
                    pass

    async def _finish(self) -> None:
        """Stop and join the workers (without hv.lock), then release()."""
        for w in self.workers:
            w.stop()
        loop = asyncio.get_running_loop()
        for w in self.workers:
            await loop.run_in_executor(None, w.join)
        self.workers.clear()
        with self.hv.lock:
            self._release_stale()
        await loop.run_in_executor(None, self.release)

    def finish_sync(self) -> None:
        """The same as _finish, for callers outside the event loop."""
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join()
        self.workers.clear()
        with self.hv.lock:
            self._release_stale()
        self.release()

    async def destroy(self) -> None:
        """The domain is going away: disconnect now, nodes, release()."""
        with self.hv.lock:
            self._do_disconnect()
            self.state = XenbusState.Closed
            self._remove_nodes()
        await self._finish()

    async def remove(self, timeout: float = REMOVE_TIMEOUT, force: bool = False) -> bool:
        """Hot unplug as libxl does it: online = 0, Closing; wait for the
        frontend to close (or ``timeout``), then remove.  True if the
        frontend closed cleanly.  (A destroy() meanwhile ends the wait.)"""
        with self.hv.lock:
            self.removing = True
            if not self.gone:
                self.store.write(f"{self.be_path}/online", "0")
            fs = self.fe.state()
            if fs in (XenbusState.Closed, XenbusState.Unknown, XenbusState.Initialising,
                      XenbusState.InitWait) or not self.connected:
                self._do_disconnect()
                self._switch(XenbusState.Closed)
            else:
                self._switch(XenbusState.Closing)
        clean = True
        if not force and self.state != XenbusState.Closed:
            deadline = asyncio.get_running_loop().time() + timeout
            while self.state != XenbusState.Closed and not self.gone:
                if asyncio.get_running_loop().time() > deadline:
                    clean = False
                    self.log(f"frontend did not close within {timeout:g} s: removed anyway")
                    break
                await asyncio.sleep(0.02)
        with self.hv.lock:
            self._do_disconnect()
            self.state = XenbusState.Closed
            self._remove_nodes()
        await self._finish()
        return clean


# ---------------------------------------------------------------------------
# a domain's devices
# ---------------------------------------------------------------------------
# kind -> factory(dom) -> [BackendDevice]: the devices a domain's config asks for
_FACTORIES: Dict[str, Callable] = {}

# libxl adds a new domain's devices in the order of its device_type_tbl
# (disks, then nics, ...), so device/vbd comes before device/vif in the
# guest's XenStore directory (xenstored lists children in creation order)
_LIBXL_ORDER = ("vbd", "vif", "vtpm", "vusb", "pci", "vdispl", "vsnd", "9pfs")


def _creation_order(item) -> int:
    kind = item[0]
    return _LIBXL_ORDER.index(kind) if kind in _LIBXL_ORDER else len(_LIBXL_ORDER)


def register_backend(kind: str, from_config: Callable) -> None:
    """A back-end module registers how to make the devices a domain's
    configuration asks for (called at import; see devices/__init__.py)."""
    _FACTORIES[kind] = from_config


class DeviceSet:
    """The PV devices of one domain (``dom.devices``)."""

    def __init__(self, dom):
        self.dom = dom
        self.devices: Dict[tuple, BackendDevice] = {}

    def create_configured(self) -> None:
        """Make every device the configuration asks for (before the guest
        runs).  A failure (image missing or locked) raises XenPVError after
        undoing what was made."""
        from . import load_backends
        load_backends()
        made = []
        try:
            for kind, factory in sorted(_FACTORIES.items(), key=_creation_order):
                for dev in factory(self.dom):
                    made.append(dev)
                    self.add(dev)
        except BaseException:
            for dev in made:
                self.devices.pop((dev.kind, dev.devid), None)
                try:
                    with dev.hv.lock:
                        dev._do_disconnect()
                        dev._remove_nodes()
                    dev.finish_sync()
                except Exception:
                    log.exception("undo %s", dev)
            raise

    def add(self, dev: BackendDevice) -> None:
        key = (dev.kind, dev.devid)
        if key in self.devices:
            raise ValueError(f"{dev.kind} {dev.devid} exists")
        self.devices[key] = dev
        try:
            dev.create()
        except BaseException:
            self.devices.pop(key, None)
            raise

    def get(self, kind: str, devid: int) -> Optional[BackendDevice]:
        return self.devices.get((kind, devid))

    def of_kind(self, kind: str) -> List[BackendDevice]:
        return [d for (k, _), d in sorted(self.devices.items()) if k == kind]

    async def remove(self, kind: str, devid: int, force: bool = False) -> bool:
        """Hot unplug.  The device stays in the set until it is gone, so a
        domain destroyed meanwhile tears it down too (before its RAM goes)."""
        dev = self.devices.get((kind, devid))
        if dev is None or dev.removing:
            raise KeyError(devid)
        try:
            return await dev.remove(force=force)
        finally:
            if self.devices.get((kind, devid)) is dev:
                del self.devices[(kind, devid)]

    async def shutdown(self) -> None:
        devs = list(self.devices.values())
        self.devices.clear()
        for dev in devs:
            try:
                await dev.destroy()
            except Exception:
                log.exception("destroy %s %d", dev.kind, dev.devid)
