"""A host TAP device on a Linux bridge: the uplink of an internal switch
whose vifs name ``bridge=NAME``, so the host's own network stack (and
whatever else is on that bridge) can talk to the guests.

It is made with ioctls, no helper programs: open ``/dev/net/tun``,
``TUNSETIFF`` (IFF_TAP | IFF_NO_PI, not persistent), ``SIOCBRADDIF`` on the
bridge, ``SIOCSIFFLAGS`` up.  Because the device is not persistent it
disappears with its file descriptor: closing it (or the daemon dying,
even by ``kill -9``) removes it and takes it off the bridge.  Needs root
(CAP_NET_ADMIN); every failure is one clear line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import Optional

from qemu_xenpv.errors import XenPVError

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCBRADDIF = 0x89A2
IFF_UP = 0x1
IFNAMSIZ = 16
MAX_FRAME = 65536


class TapError(XenPVError):
    pass


def bridge_exists(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def _ifreq(name: str, fmt: str = "", *vals) -> bytes:
    raw = name.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0")
    body = struct.pack(fmt, *vals) if fmt else b""
    return (raw + body).ljust(40, b"\0")


def valid_ifname(name: str) -> bool:
    return 0 < len(name) < IFNAMSIZ and all(c.isalnum() or c in "-_." for c in name)


class TapDevice:
    """A TAP interface ``name`` enslaved to Linux bridge ``bridge``."""

    def __init__(self, name: str, bridge: str):
        self.name = name
        self.bridge = bridge
        self.fd: Optional[int] = None
        self.rx_frames = self.tx_frames = self.tx_dropped = 0
        if not valid_ifname(bridge):
            raise TapError(f"bridge name '{bridge}' is not a valid interface name")
        if not bridge_exists(bridge):
            raise TapError(f"bridge '{bridge}' does not exist on this host: create it "
                           f"('ip link add {bridge} type bridge; ip link set {bridge} up') "
                           "or leave out bridge= to use qemu-xenpv's internal switch only")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise self._why(e, "open /dev/net/tun") from None
        try:
            fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, "H", IFF_TAP | IFF_NO_PI))
            self.fd = fd
            self._enslave_and_up()
        except OSError as e:
            os.close(fd)
            self.fd = None
            raise self._why(e, f"create TAP device {name} on bridge {bridge}") from None

    def _why(self, e: OSError, what: str) -> TapError:
        if e.errno in (errno.EPERM, errno.EACCES):
            return TapError(f"cannot {what}: permission denied (bridge= needs root or "
                            "CAP_NET_ADMIN; without bridge= guests use qemu-xenpv's "
                            "internal switch, which needs no privileges)")
        if e.errno == errno.ENOENT:
            return TapError(f"cannot {what}: /dev/net/tun is missing (modprobe tun)")
        if e.errno == errno.EBUSY:
            return TapError(f"cannot {what}: interface name {self.name} is in use")
        return TapError(f"cannot {what}: {e.strerror}")

    def _enslave_and_up(self) -> None:
        index = socket.if_nametoindex(self.name)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            fcntl.ioctl(s, SIOCBRADDIF, _ifreq(self.bridge, "i", index))
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(self.name)),
                                       IFNAMSIZ)[0]
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(self.name, "H", flags | IFF_UP))
        finally:
            s.close()

    def fileno(self) -> int:
        return self.fd if self.fd is not None else -1

    def read(self) -> Optional[bytes]:
        """One frame, or None if nothing is waiting."""
        if self.fd is None:
            return None
        try:
            data = os.read(self.fd, MAX_FRAME)
        except BlockingIOError:
            return None
        except OSError:
            return None
        self.rx_frames += 1
        return data

    def write(self, frame: bytes) -> bool:
        """Queue a frame to the host (dropped if the kernel's queue is full)."""
        if self.fd is None:
            return False
        try:
            os.write(self.fd, frame)
            self.tx_frames += 1
            return True
        except OSError:
            self.tx_dropped += 1
            return False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)           # not persistent: the interface goes with it
            self.fd = None
