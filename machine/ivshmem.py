"""Python as the ivshmem server of one ivshmem-doorbell device.

The whole server protocol (little-endian int64 messages, fds by
SCM_RIGHTS) is written into our end of a socketpair *before* QEMU starts;
QEMU reads it while realizing the device, so there is no listening socket,
no path and no race.  Guest -> Python: the guest writes (peer << 16) |
vector to BAR0+12 and QEMU signals our eventfd for that vector.  Python ->
guest: we signal the guest's own eventfd for a vector, QEMU raises the
MSI-X vector.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import Optional

GUEST_ID = 1        # the peer id QEMU's device gets
PYTHON_ID = 0       # the peer id Python plays


class IvshmemServer:
    """``vectors``: the device's MSI-X vectors, each one Python can raise
    (kick); ``doorbells``: how many of them the guest can ring back to
    Python (default: as many)."""

    def __init__(self, vectors: int = 1, shm_size: int = 4096, doorbells: Optional[int] = None):
        self.vectors = vectors
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.shm_fd = os.memfd_create("qemu-xenpv-ivshmem", os.MFD_CLOEXEC)
        os.ftruncate(self.shm_fd, shm_size)
        # guest -> us (doorbells) and us -> guest (kicks), one per vector
        self.doorbell_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                             for _ in range(vectors if doorbells is None else doorbells)]
        self.kick_fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(vectors)]
        self._send(0)                                    # protocol version
        self._send(GUEST_ID)                             # the client's own id
        self._send(-1, self.shm_fd)                      # shared memory
        for fd in self.doorbell_fds:                     # peer PYTHON_ID's vectors
            self._send(PYTHON_ID, fd)
        for fd in self.kick_fds:                         # the client's own vectors
            self._send(GUEST_ID, fd)

    def _send(self, val: int, fd: int = None) -> None:
        data = [struct.pack("<q", val)]
        if fd is None:
            self.ours.sendmsg(data)
        else:
            self.ours.sendmsg(data, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])

    def qemu_fd(self) -> int:
        """The socket end QEMU inherits (pass it in pass_fds)."""
        return self.theirs.fileno()

    def after_launch(self) -> None:
        self.theirs.close()

    def kick(self, vector: int = 0) -> None:
        os.eventfd_write(self.kick_fds[vector], 1)

    def close(self) -> None:
        for s in (self.ours, self.theirs):
            try:
                s.close()
            except OSError:
                pass
        for fd in self.doorbell_fds + self.kick_fds + [self.shm_fd]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.doorbell_fds, self.kick_fds, self.shm_fd = [], [], -1
