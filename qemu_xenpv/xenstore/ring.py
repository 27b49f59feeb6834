"""The shared-page transport: one guest's ``xenstore_domain_interface``.

``docs/misc/xenstore-ring.txt``: two 1024-byte byte streams in one page with
free-running u32 producer/consumer offsets.  Requests are read from ``req[]``
(possibly across the wrap, possibly larger than the ring: a message is
assembled from as many reads as it takes), handed to the engine, and the
engine's output for this connection (replies and watch events, in order) is
written to ``rsp[]`` as space allows; what does not fit stays queued until
the guest consumes.  Nothing is dropped.

The guest is hostile.  Indices more than a ring apart or a header announcing
more than ``XENSTORE_PAYLOAD_MAX`` bytes break the connection: the ``error``
field says why (XENSTORE_ERROR_RINGIDX / _PROTO), processing stops, watches and
transactions are dropped, ``on_error`` is told.  A guest may recover through
the reconnection feature (``connection`` = XENSTORE_RECONNECT).

Ordering: indices are read once per pass, data is copied, then the index is
published, as xenstored does around its barriers.  CPython performs these
stores in program order, which the x86 (TSO) memory model keeps in order for
the guest, so no explicit fence is needed on the hosts we run on.
"""

import logging
import struct
from typing import Callable, Optional

from ..machine.ram import store32
from .engine import Connection, XenStore
from .wire import (
    CONNECTION_OFFSET, ERROR_OFFSET, EVTCHN_PORT_OFFSET, REQ_CONS_OFFSET, REQ_OFFSET,
    REQ_PROD_OFFSET, RSP_CONS_OFFSET, RSP_OFFSET, RSP_PROD_OFFSET,
    SERVER_FEATURES_OFFSET, XENSTORE_CONNECTED, XENSTORE_ERROR_NONE,
    XENSTORE_ERROR_PROTO, XENSTORE_ERROR_RINGIDX, XENSTORE_PAGE_SIZE,
    XENSTORE_PAYLOAD_MAX, XENSTORE_RECONNECT, XENSTORE_RING_IDX_MASK,
    XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_RECONNECTION, XSD_SOCKMSG,
    XSD_SOCKMSG_SIZE, mask_xenstore_idx,
)

__all__ = ["RingConnection"]

log = logging.getLogger("qemu_xenpv.xenstore")

_U32 = struct.Struct("<I")


class RingConnection:
    """Serve ``conn`` (from ``store.connect(domid)``) over ``page``.

    ``page``: a writable buffer of exactly 4096 bytes laid out as
    ``struct xenstore_domain_interface`` (bytearray, or a memoryview of an
    mmap of guest RAM).  ``notify()``: kick the guest's event channel.
    ``on_error(ring, code, reason)``: told when the guest broke the protocol.
    ``max_pending``: stop taking requests while this many outgoing messages
    wait for ring space (xenstored's outstanding-request limit), so a guest
    that never reads replies cannot make us queue without bound.
    ``max_requests``: requests handled per :meth:`process` call, so a guest
    flooding its ring cannot monopolise the caller; when it stopped for that
    reason, ``more_to_do`` is True and the caller should call again soon
    (``loop.call_soon(ring.process)``).

    Call :meth:`process` whenever the guest kicks the event channel.  Output
    the engine produces on its own (watch events caused by other clients) is
    flushed automatically through ``conn.on_output``.
    """

    def __init__(self, store: XenStore, conn: Connection, page, notify: Callable[[], None],
                 *, on_error: Optional[Callable[["RingConnection", int, str], None]] = None,
                 max_pending: int = 32, max_requests: int = 64):
        view = memoryview(page)
        if view.readonly:
            raise ValueError("the XenStore ring page must be writable")
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        if view.nbytes != XENSTORE_PAGE_SIZE:
            raise ValueError("the XenStore ring page must be %d bytes, not %d"
                             % (XENSTORE_PAGE_SIZE, view.nbytes))
        self.store = store
        self.conn = conn
        self._page = view
        self._notify = notify
        self._on_error = on_error
        self._max_pending = max_pending
        self._max_requests = max_requests
        self._budget = 0
        self.more_to_do = False
        self.broken = False
        self.error = XENSTORE_ERROR_NONE
        self._closed = False
        self._busy = False
        self._kick_guest = False
        self._inbuf = bytearray()          # the request being assembled
        self._in_len: Optional[int] = None  # its payload length, once the header is in
        self._out = b""                    # the message being written, and how far
        self._out_off = 0
        self._features = store.features(conn.domid)
        self._set(SERVER_FEATURES_OFFSET, self._features)
        conn.on_output = self._on_output
        conn.on_reset = self._on_reset

    # ---- shared-page access -------------------------------------------------
    def _get(self, offset: int) -> int:
        return _U32.unpack_from(self._page, offset)[0]

    def _set(self, offset: int, value: int) -> None:
        store32(self._page, offset, value & XENSTORE_RING_IDX_MASK)   # one store

    def _copy_out(self, base: int, idx: int, length: int) -> bytes:
        pos = mask_xenstore_idx(idx)
        first = min(length, XENSTORE_RING_SIZE - pos)
        data = bytes(self._page[base + pos:base + pos + first])
        if first < length:
            data += bytes(self._page[base:base + length - first])
        return data

    def _copy_in(self, base: int, idx: int, data: bytes) -> None:
        pos = mask_xenstore_idx(idx)
        first = min(len(data), XENSTORE_RING_SIZE - pos)
        self._page[base + pos:base + pos + first] = data[:first]
        if first < len(data):
            self._page[base:base + len(data) - first] = data[first:]

    @property
    def evtchn_port(self) -> int:
        """The page's evtchn_port field (set by Xen for dom0less guests; 0 if unused)."""
        return self._get(EVTCHN_PORT_OFFSET)

    # ---- entry points ---------------------------------------------------------
    def process(self) -> bool:
        """Consume every complete request, write what fits, notify once if
        anything moved.  Returns whether anything moved."""
        if self._closed or self.conn.closed or self._busy:
            return False
        self._busy = True
        moved_any = False
        self._budget = self._max_requests
        self.more_to_do = False
        try:
            if (self._features & XENSTORE_SERVER_FEATURE_RECONNECTION
                    and self._get(CONNECTION_OFFSET) == XENSTORE_RECONNECT):
                self._reset_ring("guest asked to reconnect")
                moved_any = True
            while not (self.broken or self._closed or self.conn.closed):
                moved = self._write_output()
                moved = self._read_input() or moved
                if not moved:
                    break
                moved_any = True
        finally:
            self._busy = False
            self._send_kick()
        return moved_any

    def flush(self) -> bool:
        """Write queued output only (no new requests are taken)."""
        if self._closed or self.broken or self._busy:
            return False
        self._busy = True
        try:
            moved = self._write_output()
        finally:
            self._busy = False
            self._send_kick()
        return moved

    def close(self) -> None:
        """Stop serving the page and disconnect the connection from the store."""
        self._closed = True
        if self.conn.on_output == self._on_output:
            self.conn.on_output = None
        if self.conn.on_reset == self._on_reset:
            self.conn.on_reset = None
        self.store.disconnect(self.conn)
        self._page.release()        # lets the owner close the mmap behind it

    # ---- the two directions ------------------------------------------------------
    def _read_input(self) -> bool:
        consumed = False
        while not (self.broken or self._closed or self.conn.closed):
            if self._in_len is not None and len(self._inbuf) == XSD_SOCKMSG_SIZE + self._in_len:
                if self._budget <= 0:
                    self.more_to_do = True          # fairness: the caller comes back
                    break
                self._budget -= 1
                self._dispatch()
                consumed = True
                continue
            if self.conn.pending() + bool(self._out) >= self._max_pending:
                break                               # back-pressure: guest must read first
            if self._in_len is None:
                need = XSD_SOCKMSG_SIZE - len(self._inbuf)
            else:
                need = XSD_SOCKMSG_SIZE + self._in_len - len(self._inbuf)
            cons = self._get(REQ_CONS_OFFSET)
            prod = self._get(REQ_PROD_OFFSET)
            avail = (prod - cons) & XENSTORE_RING_IDX_MASK
            if avail > XENSTORE_RING_SIZE:
                self._fail(XENSTORE_ERROR_RINGIDX,
                           "request indices cons %#x prod %#x are more than a ring apart"
                           % (cons, prod))
                break
            if avail == 0:
                break
            length = min(need, avail)
            self._inbuf += self._copy_out(REQ_OFFSET, cons, length)
            self._set(REQ_CONS_OFFSET, cons + length)
            self._kick_guest = True
            consumed = True
            if self._in_len is None and len(self._inbuf) == XSD_SOCKMSG_SIZE:
                self._in_len = XSD_SOCKMSG.unpack_from(self._inbuf)[3]
                if self._in_len > XENSTORE_PAYLOAD_MAX:
                    self._fail(XENSTORE_ERROR_PROTO,
                               "request header announces %d payload bytes" % self._in_len)
                    break
        return consumed

    def _dispatch(self) -> None:
        msg_type, req_id, tx_id, _length = XSD_SOCKMSG.unpack_from(self._inbuf)
        payload = bytes(self._inbuf[XSD_SOCKMSG_SIZE:])
        self._inbuf = bytearray()
        self._in_len = None
        self.store.handle(self.conn, msg_type, req_id, tx_id, payload)

    def _write_output(self) -> bool:
        wrote = False
        while not (self.broken or self._closed):
            if not self._out:
                msg = self.conn.pop()
                if msg is None:
                    break
                self._out, self._out_off = msg.pack(), 0
            cons = self._get(RSP_CONS_OFFSET)
            prod = self._get(RSP_PROD_OFFSET)
            used = (prod - cons) & XENSTORE_RING_IDX_MASK
            if used > XENSTORE_RING_SIZE:
                self._fail(XENSTORE_ERROR_RINGIDX,
                           "response indices cons %#x prod %#x are more than a ring apart"
                           % (cons, prod))
                break
            space = XENSTORE_RING_SIZE - used
            if space == 0:
                break                               # stays queued until the guest reads
            chunk = self._out[self._out_off:self._out_off + space]
            self._copy_in(RSP_OFFSET, prod, chunk)
            self._set(RSP_PROD_OFFSET, prod + len(chunk))
            self._kick_guest = True
            wrote = True
            self._out_off += len(chunk)
            if self._out_off == len(self._out):
                self._out, self._out_off = b"", 0
        return wrote

    # ---- state changes -------------------------------------------------------------
    def _fail(self, code: int, reason: str) -> None:
        """Stop serving a guest that broke the protocol (ignore_connection())."""
        self.broken = True
        self.error = code
        self._set(ERROR_OFFSET, code)
        self._inbuf = bytearray()
        self._in_len = None
        self._out, self._out_off = b"", 0
        self.store.reset_connection(self.conn)
        self._kick_guest = True
        log.warning("dom%d XenStore ring broken (error %d): %s", self.conn.domid, code, reason)
        if self._on_error is not None:
            try:
                self._on_error(self, code, reason)
            except Exception:
                log.exception("XenStore ring on_error callback failed")

    def _reset_ring(self, why: str) -> None:
        """Empty both rings and forget everything in flight, then tell the guest
        the ring is connected again (xenstore-ring.txt, ring reconnection)."""
        log.info("dom%d XenStore ring reset: %s", self.conn.domid, why)
        self._inbuf = bytearray()
        self._in_len = None
        self._out, self._out_off = b"", 0
        self.store.reset_connection(self.conn)
        for offset in (REQ_CONS_OFFSET, REQ_PROD_OFFSET, RSP_CONS_OFFSET, RSP_PROD_OFFSET):
            self._set(offset, 0)
        self._set(ERROR_OFFSET, XENSTORE_ERROR_NONE)
        self.broken = False
        self.error = XENSTORE_ERROR_NONE
        self._set(CONNECTION_OFFSET, XENSTORE_CONNECTED)   # last: the guest waits on it
        self._kick_guest = True

    def _on_output(self, conn: Connection) -> None:
        if not self._busy:          # inside process() the loop writes it anyway
            self.flush()

    def _on_reset(self, conn: Connection) -> None:
        """INTRODUCE of an already introduced domain (domain_conn_reset())."""
        if self._closed:
            return
        self._reset_ring("domain re-introduced")
        if not self._busy:
            self._send_kick()

    def _send_kick(self) -> None:
        if self._kick_guest and not self._closed:
            self._kick_guest = False
            try:
                self._notify()
            except Exception:
                log.exception("XenStore ring notify failed for dom%d", self.conn.domid)
