"""The console of a domain as a pexpect spawn (see qemu_xenpv.api).  Its own
module so that importing the API does not import pexpect until a console
is attached."""

from __future__ import annotations

import time
from typing import Callable, List, Optional

import pexpect
from pexpect.spawnbase import SpawnBase

from .api import DEFAULT_TIMEOUT, ConsoleStream, Ending

__all__ = ["Console"]


class Console(SpawnBase):
    """A domain's console as a pexpect spawn: ``expect``, ``expect_exact``,
    ``send``, ``sendline``, ``sendcontrol``, ``read_nonblocking``,
    ``logfile``/``logfile_read``/``logfile_send``, ``before``/``after``/``match``.

    The guest's end is the console's EOF (``expect(pexpect.EOF)``); then
    :attr:`ending` says how it ended and :attr:`exitstatus` is the exit
    status ``create -c`` would give.  Closing the console detaches only;
    the domain keeps running.  Bytes mode by default (pass
    ``encoding="utf-8"`` to :meth:`Domain.attach_console` for str)."""

    def __init__(self, stream: ConsoleStream, name: str = "console", timeout: float = DEFAULT_TIMEOUT,
                 maxread: int = 65536, searchwindowsize: Optional[int] = None,
                 logfile=None, encoding: Optional[str] = None, codec_errors: str = "strict"):
        super().__init__(timeout=timeout, maxread=maxread, searchwindowsize=searchwindowsize,
                         logfile=logfile, encoding=encoding, codec_errors=codec_errors)
        self.stream = stream
        self.child_fd = stream.fileno()
        self.name = f"<console of {name}>"
        self.closed = False
        self.terminated = False
        self.delaybeforesend = None
        self._pending = bytearray()
        self._on_end: List[Callable[[Ending], None]] = []

    # ---- what the guest ended with ----
    @property
    def ending(self) -> Optional[Ending]:
        return self.stream.ending

    def _handle(self, evs) -> None:
        for kind, payload in evs:
            if kind == "data":
                self._pending += payload
            elif kind == "end":
                self.exitstatus = payload.exit_code
                self.terminated = True
                for fn in list(self._on_end):
                    fn(payload)

    def read_nonblocking(self, size: int = 1, timeout: Optional[float] = -1):
        """Up to `size` bytes of guest output; TIMEOUT after `timeout` s,
        EOF once the guest has ended (or the console was detached)."""
        if timeout == -1:
            timeout = self.timeout
        if not self._pending and not self.flag_eof:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._pending:
                if self.stream.ending is not None or self.stream.closed:
                    evs = self.stream.events(0) if not self.stream.closed else None
                    if evs:
                        self._handle(evs)
                        continue
                    break
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                evs = self.stream.events(left)
                if evs is None:
                    raise pexpect.TIMEOUT("Timeout exceeded.")
                self._handle(evs)
        if not self._pending:
            self.flag_eof = True
            ending = self.stream.ending
            raise pexpect.EOF(f"End Of File (EOF): the guest ended ({ending})" if ending
                              else "End Of File (EOF): the console connection closed")
        data = bytes(self._pending[:size])
        del self._pending[:size]
        s = self._decoder.decode(data, final=False)
        self._log(s, "read")
        return s

    def send(self, s) -> int:
        """Type `s` on the console (queued by the back end until the guest
        has room: nothing is dropped)."""
        if self.closed:
            raise ValueError("the console is closed")
        s = self._coerce_send_string(s)
        self._log(s, "send")
        b = self._encoder.encode(s, final=False)
        try:
            self.stream.send_input(b)
        except OSError as e:
            raise pexpect.EOF(f"the console connection is gone: {e}") from None
        return len(b)

    def sendline(self, s="") -> int:
        s = self._coerce_send_string(s)
        return self.send(s + self.linesep)

    def write(self, s) -> None:
        self.send(s)

    def writelines(self, sequence) -> None:
        for s in sequence:
            self.send(s)

    def sendcontrol(self, char: str) -> int:
        """Send Ctrl-`char` (``sendcontrol("c")`` is ``\\x03``)."""
        char = char.lower()
        a = ord(char)
        if 97 <= a <= 122:
            byte = a - 97 + 1
        else:
            byte = {"@": 0, "`": 0, "[": 27, "{": 27, "\\": 28, "|": 28, "]": 29, "}": 29,
                    "^": 30, "~": 30, "_": 31, "?": 127}.get(char)
            if byte is None:
                return 0
        return self.send(bytes([byte]) if self.encoding is None else chr(byte))

    def sendeof(self) -> None:
        self.sendcontrol("d")

    def poll_end(self) -> Optional[Ending]:
        """Take in whatever the daemon has sent, without waiting (output is
        kept for the next expect): the guest's end, if it has come."""
        while not self.stream.closed and self.stream.ending is None:
            evs = self.stream.events(0)
            if not evs:
                break
            self._handle(evs)
        return self.stream.ending

    def isalive(self) -> bool:
        """True until the guest has ended or the console was closed."""
        if self.closed or self.stream.ending is not None:
            return False
        evs = self.stream.events(0)
        if evs:
            self._handle(evs)
        return not (self.stream.ending is not None or self.stream.closed)

    def close(self, force: bool = True) -> None:
        """Detach (the domain keeps running)."""
        if not self.closed:
            self.closed = True
            self.stream.close()
            self.child_fd = -1

    def terminate(self, force: bool = False) -> bool:
        self.close()
        return True

    def wait(self) -> Optional[int]:
        """Until the guest ends: its exit status (see :class:`Ending`)."""
        try:
            self.expect(pexpect.EOF, timeout=None)
        except pexpect.EOF:
            pass
        return self.exitstatus

    def fileno(self) -> int:
        return self.child_fd

    def __repr__(self) -> str:
        return f"<Console {self.__dict__.get('name', '')}>"
