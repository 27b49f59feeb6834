"""Frames in classic pcap format (what tcpdump -w writes and tshark,
Wireshark and tcpdump -r read): a 24-byte global header (magic a1b2c3d4
little-endian, version 2.4, LINKTYPE_ETHERNET) then per frame a 16-byte
record header (seconds, microseconds, captured length, original length)
and the bytes.

Each frame is flushed to the file as it is written, so a capture can be
read while the domain runs and nothing is lost when the process is killed.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Iterator, List, Optional, Tuple

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")


class PcapError(Exception):
    pass


class PcapWriter:
    def __init__(self, path: str, snaplen: int = SNAPLEN):
        self.path = path
        self.snaplen = snaplen
        self.frames = 0
        try:
            self.f = open(path, "wb")
        except OSError as e:
            raise PcapError(f"cannot write the capture file '{path}': {e.strerror}") from None
        self.f.write(GLOBAL_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self.f.flush()

    def write(self, frame: bytes, ts: Optional[float] = None) -> None:
        if self.f is None:
            return
        ts = time.time() if ts is None else ts
        sec = int(ts)
        usec = int((ts - sec) * 1_000_000)
        data = frame[:self.snaplen]
        self.f.write(RECORD_HEADER.pack(sec, usec, len(data), len(frame)) + data)
        self.f.flush()
        self.frames += 1

    def close(self) -> None:
        if self.f is not None:
            try:
                self.f.close()
            finally:
                self.f = None


def iter_pcap(data: bytes) -> Iterator[Tuple[float, bytes, int]]:
    """(timestamp, captured bytes, original length) for each record of a
    pcap file's bytes (either byte order, micro- or nanosecond magic)."""
    if len(data) < GLOBAL_HEADER.size:
        raise PcapError("too short for a pcap header")
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise PcapError(f"not a pcap file (magic {magic:#x})")
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    _m, major, _minor, _tz, _sig, _snap, linktype = struct.unpack_from(endian + "IHHiIII", data)
    if major != 2 or linktype != LINKTYPE_ETHERNET:
        raise PcapError(f"unexpected pcap version {major} or link type {linktype}")
    rec = struct.Struct(endian + "IIII")
    off = GLOBAL_HEADER.size
    while off + rec.size <= len(data):
        sec, frac, caplen, origlen = rec.unpack_from(data, off)
        off += rec.size
        if off + caplen > len(data):
            break                           # a record being written
        yield sec + frac / (1e9 if nano else 1e6), data[off:off + caplen], origlen
        off += caplen


def read_pcap(path: str) -> List[bytes]:
    """The frames of a pcap file."""
    with open(path, "rb") as f:
        return [frame for _ts, frame, _n in iter_pcap(f.read())]


def describe(frame: bytes) -> str:
    """A one-line summary of an Ethernet frame (for logs and tests)."""
    if len(frame) < 14:
        return f"runt ({len(frame)} bytes)"
    mac = lambda b: ":".join(f"{x:02x}" for x in b)
    et = struct.unpack_from(">H", frame, 12)[0]
    head = f"{mac(frame[6:12])} > {mac(frame[0:6])}"
    if et == 0x0806 and len(frame) >= 42:
        op = struct.unpack_from(">H", frame, 20)[0]
        return f"{head} ARP {'request' if op == 1 else 'reply' if op == 2 else op} " \
               f"{ip4(frame[28:32])} -> {ip4(frame[38:42])}"
    if et == 0x0800 and len(frame) >= 34:
        proto = frame[23]
        src, dst = ip4(frame[26:30]), ip4(frame[30:34])
        hl = (frame[14] & 15) * 4
        l4 = 14 + hl
        if proto == 1 and len(frame) >= l4 + 8:
            t = frame[l4]
            name = {0: "echo reply", 8: "echo request"}.get(t, f"type {t}")
            seq = struct.unpack_from(">H", frame, l4 + 6)[0]
            return f"{head} IPv4 {src} > {dst} ICMP {name} seq {seq}"
        if proto == 17 and len(frame) >= l4 + 8:
            sp, dp, ln = struct.unpack_from(">HHH", frame, l4)
            return f"{head} IPv4 {src}:{sp} > {dst}:{dp} UDP len {ln - 8}"
        return f"{head} IPv4 {src} > {dst} proto {proto}"
    return f"{head} ethertype {et:#06x} len {len(frame)}"


def ip4(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def os_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
