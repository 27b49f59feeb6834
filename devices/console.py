"""The PV console back end (xenconsoled's job): the guest's
xencons_interface ring plus its event channel.

Output is copied to every sink (the per-domain log file, attached
consoles, the TCP port); input waits in a queue until the guest's `in`
ring has room, so nothing typed is ever dropped (back-pressure).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, List

from qemu_xenpv import abi

log = logging.getLogger("qemu_xenpv.console")

IN, OUT = abi.XENCONS_IN, abi.XENCONS_OUT
IN_SIZE, OUT_SIZE = abi.XENCONS_IN_SIZE, abi.XENCONS_OUT_SIZE
HISTORY = 64 * 1024
LIMIT = 1048576                     # LIBXL_XENCONSOLE_LIMIT, published as console/limit


class ConsoleBackend:
    def __init__(self, dom, ring_mfn: int, guest_port: int):
        self.dom = dom
        self.ram = dom.ram
        self.ring = ring_mfn << 12
        self.guest_port = guest_port
        self.port = 0                       # our (domain 0) end
        self.sinks: List[Callable[[bytes], None]] = []
        self.pending_input = deque()
        self.history = bytearray()
        self.bytes_out = 0

    def connect(self) -> None:
        hv = self.dom.hv
        self.port = hv.dom0.evtchn.dom0_bind(self.dom.domid, self.guest_port, self._on_event)
        if self.port < 0:
            raise RuntimeError(f"console: cannot bind event channel ({self.port})")

    def disconnect(self) -> None:
        if self.port > 0:
            self.dom.hv.dom0.evtchn.close(self.port)
            self.port = 0

    def xenstore_nodes(self):
        """The first console's XenStore entries as xl writes them
        (libxl__device_console_add, libxl__device_generic_add for console 0):
        (path, value or None for a directory, permissions or None to inherit)."""
        n = self.dom.domid
        fe = f"/local/domain/{n}/console"
        be = f"/local/domain/0/backend/console/{n}/0"
        ro = ["n0", f"r{n}"]
        return [
            (fe, None, ro),
            (f"{fe}/backend", be, None),
            (f"{fe}/backend-id", "0", [f"n{n}", "r0"]),
            (f"{fe}/limit", str(LIMIT), None),
            (f"{fe}/type", "xenconsoled", None),
            (f"{fe}/output", "pty", None),
            (f"{fe}/tty", "", None),
            (f"{fe}/port", str(self.guest_port), None),
            (f"{fe}/ring-ref", str(self.ring >> 12), None),
            (be, None, ro),
            (f"{be}/frontend", fe, None),
            (f"{be}/frontend-id", str(n), None),
            (f"{be}/online", "1", None),
            (f"{be}/state", "1", None),
            (f"{be}/protocol", "vt100", None),
        ]

    def add_sink(self, fn: Callable[[bytes], None]) -> None:
        self.sinks.append(fn)

    def remove_sink(self, fn: Callable[[bytes], None]) -> None:
        if fn in self.sinks:
            self.sinks.remove(fn)

    def _notify_guest(self) -> None:
        if self.port > 0:
            self.dom.hv.dom0.evtchn.send(self.port)

    def _on_event(self, _port: int) -> None:
        with self.dom.hv.lock:
            if not self.dom.alive:
                return
            data = self._drain_output()
            fed = self._feed_input()
            if data or fed:
                self._notify_guest()
        if data:
            self.emit(data)

    def poll(self) -> None:
        """Look at the rings without an event (after attach, on a timer)."""
        self._on_event(0)

    def _drain_output(self) -> bytes:
        ram, r = self.ram, self.ring
        cons = ram.r32(r + abi.XENCONS_OUT_CONS)
        prod = ram.r32(r + abi.XENCONS_OUT_PROD)
        n = (prod - cons) & 0xFFFFFFFF
        if n == 0:
            return b""
        if n > OUT_SIZE:                    # a broken guest: resynchronise
            log.warning("dom%d console: bad indices cons=%d prod=%d", self.dom.domid, cons, prod)
            ram.w32(r + abi.XENCONS_OUT_CONS, prod)
            return b""
        out = bytearray()
        while cons != prod:
            off = cons & (OUT_SIZE - 1)
            chunk = min(OUT_SIZE - off, (prod - cons) & 0xFFFFFFFF)
            out += ram.read(r + OUT + off, chunk)
            cons = (cons + chunk) & 0xFFFFFFFF
        ram.fence()
        ram.w32(r + abi.XENCONS_OUT_CONS, cons)
        return bytes(out)

    def _feed_input(self) -> bool:
        if not self.pending_input:
            return False
        ram, r = self.ram, self.ring
        cons = ram.r32(r + abi.XENCONS_IN_CONS)
        prod = ram.r32(r + abi.XENCONS_IN_PROD)
        space = IN_SIZE - ((prod - cons) & 0xFFFFFFFF)
        if space <= 0:
            return False
        moved = False
        while space > 0 and self.pending_input:
            data = self.pending_input[0]
            take = data[:space]
            for b in take:
                ram.w8(r + IN + (prod & (IN_SIZE - 1)), b)
                prod = (prod + 1) & 0xFFFFFFFF
            space -= len(take)
            if len(take) == len(data):
                self.pending_input.popleft()
            else:
                self.pending_input[0] = data[len(take):]
            moved = True
        ram.fence()
        ram.w32(r + abi.XENCONS_IN_PROD, prod)
        return moved

    def write_input(self, data: bytes) -> None:
        if not data:
            return
        self.pending_input.append(bytes(data))
        with self.dom.hv.lock:
            if self.dom.alive and self._feed_input():
                self._notify_guest()

    def emit(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.history += data
        if len(self.history) > HISTORY:
            del self.history[:len(self.history) - HISTORY]
        for fn in list(self.sinks):
            try:
                fn(data)
            except Exception:
                log.exception("console sink failed")
