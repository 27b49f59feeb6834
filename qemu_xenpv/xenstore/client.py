"""A small blocking xs_wire client for xenstored's Unix socket (what
libxenstore does for host tools): the CLI's ``xenstore-*`` commands and the
tests use it.  Errors raise :class:`XenStoreError` with the wire's errno name.
"""

from __future__ import annotations

import collections
import itertools
import select
import socket
from typing import Deque, List, Optional, Tuple

from .nodes import XenStoreError, decode, encode
from .wire import XSD_SOCKMSG, XSD_SOCKMSG_SIZE, XsType

__all__ = ["XsClient"]


class XsClient:
    def __init__(self, path: str, timeout: Optional[float] = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buf = b""
        self._ids = itertools.count(1)
        self.events: Deque[Tuple[str, str]] = collections.deque()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "XsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the wire ----
    def _recv_message(self, timeout: Optional[float] = None):
        while True:
            if len(self._buf) >= XSD_SOCKMSG_SIZE:
                t, rid, tx, n = XSD_SOCKMSG.unpack_from(self._buf)
                if len(self._buf) >= XSD_SOCKMSG_SIZE + n:
                    payload = self._buf[XSD_SOCKMSG_SIZE:XSD_SOCKMSG_SIZE + n]
                    self._buf = self._buf[XSD_SOCKMSG_SIZE + n:]
                    return t, rid, tx, payload
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("xenstored closed the connection")
            self._buf += chunk

    def request(self, msg_type: int, payload: bytes, tx_id: int = 0) -> bytes:
        req_id = next(self._ids)
        self.sock.sendall(XSD_SOCKMSG.pack(msg_type, req_id, tx_id, len(payload)) + payload)
        while True:
            t, rid, _tx, body = self._recv_message()
            if t == XsType.WATCH_EVENT:
                path, token = body.split(b"\0")[:2]
                self.events.append((decode(path), decode(token)))
                continue
            if rid != req_id:
                continue
            if t == XsType.ERROR:
                raise XenStoreError(decode(body.rstrip(b"\0")) or "EIO")
            return body

    # ---- operations ----
    def read(self, path: str, tx: int = 0) -> bytes:
        return self.request(XsType.READ, encode(path) + b"\0", tx)

    def write(self, path: str, value, tx: int = 0) -> None:
        self.request(XsType.WRITE, encode(path) + b"\0" + encode(value), tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self.request(XsType.MKDIR, encode(path) + b"\0", tx)

    def rm(self, path: str, tx: int = 0) -> None:
        self.request(XsType.RM, encode(path) + b"\0", tx)

    def directory(self, path: str, tx: int = 0) -> List[str]:
        body = self.request(XsType.DIRECTORY, encode(path) + b"\0", tx)
        return [decode(c) for c in body.split(b"\0") if c]

    def get_perms(self, path: str, tx: int = 0) -> List[str]:
        body = self.request(XsType.GET_PERMS, encode(path) + b"\0", tx)
        return [decode(c) for c in body.split(b"\0") if c]

    def set_perms(self, path: str, perms, tx: int = 0) -> None:
        self.request(XsType.SET_PERMS, encode(path) + b"\0"
                     + b"".join(encode(p) + b"\0" for p in perms), tx)

    def watch(self, path: str, token: str) -> None:
        self.request(XsType.WATCH, encode(path) + b"\0" + encode(token) + b"\0")

    def unwatch(self, path: str, token: str) -> None:
        self.request(XsType.UNWATCH, encode(path) + b"\0" + encode(token) + b"\0")

    def read_watch(self, timeout: Optional[float] = None) -> Optional[Tuple[str, str]]:
        """The next watch event (path, token), or None after ``timeout`` s."""
        while not self.events:
            msg = self._recv_message(timeout)
            if msg is None:
                return None
            t, _rid, _tx, body = msg
            if t == XsType.WATCH_EVENT:
                path, token = body.split(b"\0")[:2]
                self.events.append((decode(path), decode(token)))
        return self.events.popleft()

    def transaction_start(self) -> int:
        return int(self.request(XsType.TRANSACTION_START, b"\0").rstrip(b"\0"))

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        self.request(XsType.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    def tree(self, path: str = "/", perms: bool = False) -> List[str]:
        """xenstore-ls: ``name = "value"`` per node, one space per level."""
        from .nodes import sanitise_value
        out: List[str] = []

        def walk(node: str, depth: int) -> None:
            for child in self.directory(node):
                full = ("" if node == "/" else node) + "/" + child
                try:
                    value = sanitise_value(self.read(full))
                except XenStoreError as e:
                    if e.errno not in ("EACCES", "ENOENT"):
                        raise
                    value = ""
                line = f'{" " * depth}{child} = "{value}"'
                if perms:
                    line += "  (%s)" % ",".join(self.get_perms(full))
                out.append(line)
                walk(full, depth + 1)
        walk(path, 0)
        return out
