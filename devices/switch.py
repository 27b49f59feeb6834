"""The software Ethernet switch inside qemu-xenpv: it connects the vifs of
all guests of one daemon (guest <-> guest needs no root), learning which
MAC is behind which port, flooding broadcasts and unknown destinations.

There is one switch per name: ``internal`` for vifs without ``bridge=``,
and one per bridge name for vifs with ``bridge=NAME``; a bridge switch has
one uplink, a TAP device on the host's Linux bridge NAME (devices/tap.py),
made when its first vif arrives and removed with its last.  One TAP per
switch (not per vif) means the host bridge sees the switch as one port, so
frames between two local guests never loop through the host.

Anti-spoofing (the seeds' rule: a domain may only send with its own MAC):
a vif port has a fixed MAC, and a frame whose source is not that MAC is
dropped and counted; with ``ip=`` on the vif, IPv4 and ARP frames must also
carry one of its addresses as the sender.  Vif MACs are static entries in
the forwarding table, so nothing behind the uplink can steal them.

Checksum offload travels with each frame: ``partial`` means the TCP/UDP
checksum field holds only the pseudo-header sum (NETTXF_csum_blank).  A port
that cannot take such frames (the TAP, a frontend with
feature-no-csum-offload) gets a copy with the checksum completed.

Every method runs with ``hv.lock`` held on the hypervisor's event loop
thread (netback's event handlers, the TAP reader), so the switch needs no
lock of its own.
"""

from __future__ import annotations

import array
import ipaddress
import logging
import struct
import sys
import time
from typing import Dict, List, Optional, Set

log = logging.getLogger("qemu_xenpv.switch")

INTERNAL = "internal"
FDB_MAX = 4096                  # learned entries (a MAC flood from the uplink stays bounded)
FDB_AGE = 300.0                 # seconds, as the Linux bridge's default ageing time
BROADCAST = b"\xff" * 6


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"'{text}' is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return bytes(int(p, 16) for p in parts)


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------
def ones_sum(data) -> int:
    """The sum of the big-endian 16-bit words (odd length: zero-padded),
    not folded: fold() it."""
    b = bytes(data)
    if len(b) & 1:
        b += b"\0"
    a = array.array("H", b)
    if sys.byteorder == "little":
        a.byteswap()
    return sum(a)


def fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l4_checksum_offset(frame: bytes):
    """(start of the L4 header, offset of its checksum field, pseudo-header
    sum) for a TCP or UDP packet over IPv4 or IPv6 (one VLAN tag allowed),
    or None."""
    off = 12
    et = struct.unpack_from(">H", frame, off)[0] if len(frame) >= 14 else 0
    if et == 0x8100 and len(frame) >= 18:
        off += 4
        et = struct.unpack_from(">H", frame, off)[0]
    ip = off + 2
    if et == 0x0800 and len(frame) >= ip + 20:
        hl = (frame[ip] & 15) * 4
        total = struct.unpack_from(">H", frame, ip + 2)[0]
        proto = frame[ip + 9]
        l4 = ip + hl
        l4len = total - hl
        if hl < 20 or l4len <= 0 or ip + total > len(frame):
            return None
        if struct.unpack_from(">H", frame, ip + 6)[0] & 0x3FFF:
            return None                         # a fragment: no L4 header here
        pseudo = ones_sum(frame[ip + 12:ip + 20]) + proto + l4len
    elif et == 0x86DD and len(frame) >= ip + 40:
        plen = struct.unpack_from(">H", frame, ip + 4)[0]
        proto = frame[ip + 6]
        l4 = ip + 40
        l4len = plen
        if l4 + l4len > len(frame):
            return None
        pseudo = ones_sum(frame[ip + 8:ip + 40]) + proto + l4len
    else:
        return None
    if proto == 6 and l4len >= 20:
        return l4, l4 + 16, pseudo, l4 + l4len
    if proto == 17 and l4len >= 8:
        return l4, l4 + 6, pseudo, l4 + l4len
    return None


def complete_checksum(frame: bytes) -> bytes:
    """Fill in the TCP/UDP checksum of a CHECKSUM_PARTIAL frame (what a NIC
    does for an offloaded one).  The pseudo-header is summed afresh, so what
    the sender left in the field does not matter.  Other frames unchanged."""
    where = l4_checksum_offset(frame)
    if where is None:
        return frame
    l4, field, pseudo, end = where
    buf = bytearray(frame)
    buf[field:field + 2] = b"\0\0"
    c = (~fold(pseudo + ones_sum(memoryview(buf)[l4:end]))) & 0xFFFF
    if c == 0 and field == l4 + 6:
        c = 0xFFFF                              # UDP: 0 means "no checksum"
    struct.pack_into(">H", buf, field, c)
    return bytes(buf)


def checksum_ok(frame: bytes) -> Optional[bool]:
    """Whether a frame's TCP/UDP checksum verifies (None: not TCP/UDP)."""
    where = l4_checksum_offset(frame)
    if where is None:
        return None
    l4, field, pseudo, end = where
    if field == l4 + 6 and frame[field:field + 2] == b"\0\0":
        return True                             # UDP without a checksum
    return fold(pseudo + ones_sum(frame[l4:end])) == 0xFFFF


# ---------------------------------------------------------------------------
# ports and the switch
# ---------------------------------------------------------------------------
class Port:
    """Something frames come from and go to.  ``mac``: the only source MAC
    this port may send with (None: an uplink, anything goes)."""

    name = "port"
    mac: Optional[bytes] = None
    allowed_ips: Optional[Set[bytes]] = None    # 4-byte IPv4 sources allowed (None: any)
    accepts_partial = False

    def __init__(self):
        self.switch: Optional["Switch"] = None
        self.spoofed = 0
        self.forwarded = 0

    def deliver(self, frame: bytes, partial: bool) -> None:
        raise NotImplementedError


class Switch:
    def __init__(self, name: str):
        self.name = name
        self.ports: List[Port] = []
        self.fdb: Dict[bytes, tuple] = {}       # mac -> (port, last seen, static)
        self.uplink = None                      # a TapPort, for bridge switches
        self.frames = 0
        self.flooded = 0
        self.dropped = 0

    # ---- membership ----
    def attach(self, port: Port) -> None:
        if port in self.ports:
            return
        if port.mac is not None:
            owner = self.fdb.get(port.mac)
            if owner is not None and owner[2] and owner[0] is not port:
                raise ValueError(f"MAC {mac_str(port.mac)} is already used by "
                                 f"{owner[0].name} on switch {self.name}")
            self.fdb[port.mac] = (port, time.monotonic(), True)
        port.switch = self
        self.ports.append(port)

    def detach(self, port: Port) -> None:
        if port in self.ports:
            self.ports.remove(port)
        for mac in [m for m, e in self.fdb.items() if e[0] is port]:
            del self.fdb[mac]
        port.switch = None

    def vif_ports(self) -> List[Port]:
        return [p for p in self.ports if p is not self.uplink]

    # ---- forwarding ----
    def _spoofed(self, port: Port, frame: bytes) -> bool:
        if port.mac is not None and frame[6:12] != port.mac:
            return True
        if port.allowed_ips is not None:
            et = frame[12:14]
            if et == b"\x08\x00" and len(frame) >= 34:
                src = frame[26:30]
                return src not in port.allowed_ips and src != b"\0\0\0\0"
            if et == b"\x08\x06" and len(frame) >= 42:
                return frame[28:32] not in port.allowed_ips and frame[28:32] != b"\0\0\0\0"
        return False

    def input(self, port: Port, frame: bytes, partial: bool = False) -> int:
        """A frame from ``port``: to how many ports it went (0: dropped)."""
        if len(frame) < 14:
            self.dropped += 1
            return 0
        if self._spoofed(port, frame):
            port.spoofed += 1
            if port.spoofed in (1, 10, 100, 1000) or port.spoofed % 10000 == 0:
                log.warning("switch %s: %s sent %d frame(s) with a foreign source "
                            "(%s): dropped", self.name, port.name, port.spoofed,
                            mac_str(frame[6:12]))
            return 0
        src, dst = frame[6:12], frame[0:6]
        if src[0] & 1:
            self.dropped += 1                   # a multicast source is never valid
            return 0
        now = time.monotonic()
        entry = self.fdb.get(src)
        if entry is None or (not entry[2] and (entry[0] is not port or now - entry[1] > 1.0)):
            if entry is not None or len(self.fdb) < FDB_MAX:
                self.fdb[src] = (port, now, False)
        self.frames += 1
        if dst[0] & 1:
            targets = [p for p in self.ports if p is not port]
            self.flooded += 1
        else:
            e = self.fdb.get(dst)
            if e is not None and not e[2] and now - e[1] > FDB_AGE:
                del self.fdb[dst]
                e = None
            if e is None:
                targets = [p for p in self.ports if p is not port]
                self.flooded += 1
            elif e[0] is port:
                return 0                        # it came from there
            else:
                targets = [e[0]]
        port.forwarded += 1
        completed = None
        for p in targets:
            if partial and not p.accepts_partial:
                if completed is None:
                    completed = complete_checksum(frame)
                p.deliver(completed, False)
            else:
                p.deliver(frame, partial)
        return len(targets)

    def info(self) -> dict:
        return {"name": self.name, "ports": [p.name for p in self.ports],
                "uplink": self.uplink.name if self.uplink else None,
                "fdb": {mac_str(m): e[0].name for m, e in self.fdb.items()},
                "frames": self.frames, "flooded": self.flooded, "dropped": self.dropped}


class TapPort(Port):
    """The uplink of a bridge switch: a TAP device on the host bridge."""

    accepts_partial = False

    def __init__(self, tap, loop):
        super().__init__()
        self.tap = tap
        self.name = f"tap {tap.name} (bridge {tap.bridge})"
        self.loop = loop
        self.hv = None

    def deliver(self, frame: bytes, partial: bool) -> None:
        self.tap.write(frame)

    def start(self, hv) -> None:
        self.hv = hv
        hv.loop.call_soon_threadsafe(hv.loop.add_reader, self.tap.fileno(), self._readable)

    def _readable(self) -> None:
        hv = self.hv
        for _ in range(64):                     # then let others run
            frame = self.tap.read()
            if frame is None:
                return
            with hv.lock:
                if self.switch is not None:
                    self.switch.input(self, frame, False)

    def stop(self) -> None:
        fd = self.tap.fileno()
        hv = self.hv
        if hv is not None and fd >= 0:
            def remove_and_close():
                try:
                    hv.loop.remove_reader(fd)
                finally:
                    self.tap.close()
            if hv.loop.is_running():
                hv.loop.call_soon_threadsafe(remove_and_close)
                return
        self.tap.close()


_tap_seq = 0


def _tap_name(bridge: str) -> str:
    import os
    global _tap_seq
    _tap_seq += 1
    return f"xpv{os.getpid() % 1000000}.{_tap_seq % 100}"


def get_switch(hv, bridge: Optional[str]) -> Switch:
    """The switch for ``bridge`` (None: the internal one), made on first use;
    a bridge switch gets its TAP uplink now (TapError if it cannot)."""
    switches = hv.__dict__.setdefault("net_switches", {})
    name = bridge or INTERNAL
    sw = switches.get(name)
    if sw is None:
        sw = Switch(name)
        if bridge:
            from .tap import TapDevice
            tap = TapDevice(_tap_name(bridge), bridge)
            up = TapPort(tap, hv.loop)
            sw.attach(up)
            sw.uplink = up
            up.start(hv)
            hv.dmesg(f"(XEN) switch {name}: uplink {tap.name} on host bridge {bridge}")
        switches[name] = sw
    return sw


def put_switch(hv, sw: Switch) -> None:
    """Drop a switch (and its TAP) once no vif is left on it."""
    if sw.vif_ports():
        return
    switches = hv.__dict__.setdefault("net_switches", {})
    if switches.get(sw.name) is sw:
        del switches[sw.name]
    if sw.uplink is not None:
        up, sw.uplink = sw.uplink, None
        sw.detach(up)
        up.stop()
        hv.dmesg(f"(XEN) switch {sw.name}: uplink {up.tap.name} removed")


def ip_set(text: Optional[str]) -> Optional[Set[bytes]]:
    """The IPv4 addresses of a vif's ``ip=`` (space separated, prefixes
    allowed) as 4-byte strings; None when there is none."""
    if not text:
        return None
    out = set()
    for word in text.split():
        iface = ipaddress.ip_interface(word)
        if iface.version == 4:
            out.add(iface.ip.packed)
    return out or None
