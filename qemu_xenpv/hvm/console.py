"""The console of an HVM domain: QEMU's 16550 on COM1, whose chardev is
our end of a socketpair.  The same interface as the PV console back end
(devices/console.py): sinks, history, input with back-pressure (QEMU
reads only while the UART can take bytes, the socket buffers the rest,
and we queue what the socket cannot take).  Runs on the hypervisor loop.

Lines hvmloader prints ("HVM Loader", "hvmloader: ...") also go to the
hypervisor log, as Xen's hvmloader output went to `xl dmesg`.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from typing import Callable, List, Optional

log = logging.getLogger("qemu_xenpv.hvm.console")

HISTORY = 64 * 1024


class SerialConsole:
    def __init__(self, dom, sock: socket.socket):
        self.dom = dom
        self.sock = sock
        self.sinks: List[Callable[[bytes], None]] = []
        self.history = bytearray()
        self.pending_input = deque()
        self.bytes_out = 0
        self._loop = None
        self._line = bytearray()
        self._loader_done = False
        self._writing = False
        # the daemon's log file is the first sink; a later one is a client
        self.sinks_added = 0
        self.on_attach: Optional[Callable[[], None]] = None

    def connect(self) -> None:
        self._loop = self.dom.hv.loop
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def disconnect(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.sock.fileno())
                if self._writing:
                    self._loop.remove_writer(self.sock.fileno())
            except (ValueError, OSError):
                pass
            self._loop = None

    def add_sink(self, fn: Callable[[bytes], None]) -> None:
        self.sinks.append(fn)
        self.sinks_added += 1
        if self.on_attach is not None and self.sinks_added >= 2:
            self.on_attach()

    def remove_sink(self, fn: Callable[[bytes], None]) -> None:
        if fn in self.sinks:
            self.sinks.remove(fn)

    def xenstore_nodes(self):
        """The PV console's XenStore entries (the serial line has none)."""
        pv = getattr(self.dom, "pv", None)
        if pv is None or pv.pv_console is None:
            return []
        return pv.pv_console.xenstore_nodes()

    def poll(self) -> None:
        """Output arrives by itself; nothing to look at."""

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.disconnect()
            return
        self.emit(data)

    def emit(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.history += data
        if len(self.history) > HISTORY:
            del self.history[:len(self.history) - HISTORY]
        if not self._loader_done:
            self._loader_lines(data)
        for fn in list(self.sinks):
            try:
                fn(data)
            except Exception:
                log.exception("console sink failed")

    def _loader_lines(self, data: bytes) -> None:
        self._line += data
        while b"\n" in self._line:
            line, _, rest = bytes(self._line).partition(b"\n")
            self._line[:] = rest
            text = line.decode(errors="replace").rstrip("\r")
            if text.startswith(("hvmloader:", "HVM Loader", "Loading ACPI")):
                self.dom.log(text)
            if text.startswith("hvmloader: starting") or text.startswith("hvmloader: FATAL"):
                self._loader_done = True
                self._line.clear()
                return
        if len(self._line) > 4096:
            self._line.clear()

    def write_input(self, data: bytes) -> None:
        if not data:
            return
        self.pending_input.append(bytes(data))
        self._flush()

    def _flush(self) -> None:
        while self.pending_input:
            chunk = self.pending_input[0]
            try:
                n = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.pending_input.clear()
                return
            if n < len(chunk):
                self.pending_input[0] = chunk[n:]
                if not self._writing and self._loop is not None:
                    self._loop.add_writer(self.sock.fileno(), self._flush)
                    self._writing = True
                return
            self.pending_input.popleft()
        if self._writing and self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())
            self._writing = False
