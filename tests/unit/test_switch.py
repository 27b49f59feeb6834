"""The software switch (devices/switch.py): learning, flooding, anti-
spoofing, static vif MACs, checksum completion for ports without offload;
the pcap writer/reader (devices/pcap.py); TAP errors (devices/tap.py)."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess

import pytest

from qemu_xenpv.devices import switch as sw
from qemu_xenpv.devices.pcap import PcapError, PcapWriter, describe, iter_pcap, read_pcap
from qemu_xenpv.devices.switch import (FDB_MAX, Port, Switch, checksum_ok, complete_checksum,
                                       fold, ip_set, mac_bytes, ones_sum)

BCAST = b"\xff" * 6


class P(Port):
    def __init__(self, name, mac=None, partial=True, ips=None):
        super().__init__()
        self.name = name
        self.mac = mac_bytes(mac) if mac else None
        self.accepts_partial = partial
        self.allowed_ips = ip_set(ips)
        self.got = []

    def deliver(self, frame, partial):
        self.got.append((frame, partial))


def m(n):
    return bytes([0, 0x16, 0x3E, 0, 0, n])


def fr(dst, src, payload=b"p" * 46):
    return dst + src + b"\x88\xb5" + payload


def reference_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp4(payload: bytes, partial: bool, vlan=False) -> bytes:
    ulen = 8 + len(payload)
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 7, 0, 64, 17, 0,
                               bytes([192, 168, 1, 1]), bytes([192, 168, 1, 2])))
    struct.pack_into(">H", ip, 10, ~reference_checksum(bytes(ip)) & 0xFFFF)
    pseudo = bytes(ip[12:20]) + struct.pack(">BBH", 0, 17, ulen)
    udp = bytearray(struct.pack(">HHHH", 5000, 6000, ulen, 0) + payload)
    full = ~reference_checksum(pseudo + bytes(udp)) & 0xFFFF
    struct.pack_into(">H", udp, 6, reference_checksum(pseudo) if partial else (full or 0xFFFF))
    eth = BCAST + m(1) + (b"\x81\x00\x00\x05" if vlan else b"") + b"\x08\x00"
    return eth + bytes(ip) + bytes(udp)


def tcp6(payload: bytes) -> bytes:
    src, dst = bytes(range(16)), bytes(range(16, 32))
    tcp = bytearray(struct.pack(">HHIIBBHHH", 80, 9999, 1, 2, 5 << 4, 0x18, 1024, 0xBEEF, 0)
                    + payload)
    ip6 = struct.pack(">IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
    return BCAST + m(1) + b"\x86\xdd" + ip6 + bytes(tcp)


# ---- checksums -----------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 3, 100, 1471, 1472, 9000])
def test_ones_sum_matches_reference(n):
    data = bytes(random.Random(n).randrange(256) for _ in range(n))
    assert fold(ones_sum(data)) == reference_checksum(data)


@pytest.mark.parametrize("size", [0, 1, 17, 1472])
@pytest.mark.parametrize("vlan", [False, True])
def test_complete_checksum_udp4(size, vlan):
    payload = bytes(random.Random(size).randrange(256) for _ in range(size))
    partial, full = udp4(payload, True, vlan), udp4(payload, False, vlan)
    assert checksum_ok(full) is True
    assert complete_checksum(partial) == full
    assert complete_checksum(full) == full              # idempotent


def test_complete_checksum_tcp6_and_non_l4_frames():
    f = tcp6(b"GET / HTTP/1.0\r\n\r\n")
    assert checksum_ok(f) is False
    done = complete_checksum(f)
    assert checksum_ok(done) is True and done != f
    arp = BCAST + m(1) + b"\x08\x06" + b"\0" * 28
    assert complete_checksum(arp) == arp and checksum_ok(arp) is None


# ---- forwarding -----------------------------------------------------------------
def test_learning_flooding_and_unicast():
    s = Switch("t")
    a, b, c = P("a", "00:16:3e:00:00:01"), P("b", "00:16:3e:00:00:02"), P("c", "00:16:3e:00:00:03")
    for p in (a, b, c):
        s.attach(p)
    assert s.input(a, fr(BCAST, m(1))) == 2             # broadcast floods
    assert s.input(a, fr(m(2), m(1))) == 1 and len(b.got) == 2 and len(c.got) == 1
    assert s.input(b, fr(m(9), m(2))) == 2              # unknown unicast floods
    assert s.input(a, fr(m(1), m(1))) == 0              # to itself: nowhere


def test_spoofed_frames_are_dropped_and_counted():
    s = Switch("t")
    a, b = P("a", "00:16:3e:00:00:01"), P("b", "00:16:3e:00:00:02")
    s.attach(a)
    s.attach(b)
    assert s.input(a, fr(BCAST, m(7))) == 0 and a.spoofed == 1 and not b.got
    assert s.input(a, fr(BCAST, b"\x01" + m(1)[1:])) == 0   # a multicast source never
    assert s.input(a, fr(BCAST, m(1))) == 1


def test_uplink_cannot_steal_a_vif_mac():
    s = Switch("t")
    a, up = P("a", "00:16:3e:00:00:01"), P("uplink")
    s.attach(a)
    s.attach(up)
    s.input(up, fr(BCAST, m(1)))                        # the host claims a's MAC
    s.input(up, fr(m(1), m(5)))
    assert s.fdb[m(1)][0] is a and len(a.got) == 2
    with pytest.raises(ValueError, match="already used"):
        s.attach(P("dup", "00:16:3e:00:00:01"))


def test_fdb_is_bounded():
    s = Switch("t")
    up, a = P("uplink"), P("a", "00:16:3e:00:00:01")
    s.attach(up)
    s.attach(a)
    for i in range(FDB_MAX + 100):
        s.input(up, fr(BCAST, b"\x02" + i.to_bytes(5, "big")))
    assert len(s.fdb) <= FDB_MAX + 1


def test_ip_antispoofing():
    s = Switch("t")
    a, b = P("a", "00:16:3e:00:00:01", ips="192.168.1.1/24"), P("b", "00:16:3e:00:00:02")
    s.attach(a)
    s.attach(b)
    good = udp4(b"x", False)
    assert s.input(a, good) == 1
    bad = bytearray(good)
    bad[26:30] = bytes([192, 168, 1, 77])
    assert s.input(a, bytes(bad)) == 0 and a.spoofed == 1


def test_partial_checksum_completed_only_for_ports_without_offload():
    s = Switch("t")
    a = P("a", "00:16:3e:00:00:01")
    off, no = P("off", "00:16:3e:00:00:02", partial=True), P("no", "00:16:3e:00:00:03",
                                                             partial=False)
    for p in (a, off, no):
        s.attach(p)
    partial = udp4(b"hello", True)
    s.input(a, partial, partial=True)
    assert off.got == [(partial, True)]
    assert no.got == [(udp4(b"hello", False), False)]


def test_detach_forgets_macs():
    s = Switch("t")
    a, b = P("a", "00:16:3e:00:00:01"), P("b", "00:16:3e:00:00:02")
    s.attach(a)
    s.attach(b)
    s.detach(a)
    assert m(1) not in s.fdb and s.input(b, fr(m(1), m(2))) == 0


# ---- pcap -------------------------------------------------------------------------
def test_pcap_round_trip_and_header(tmp_path):
    p = tmp_path / "x.pcap"
    w = PcapWriter(str(p))
    frames = [fr(BCAST, m(1)), udp4(b"abc", False), b"\x00" * 60]
    for i, f in enumerate(frames):
        w.write(f, ts=1000.5 + i)
    w.close()
    raw = p.read_bytes()
    assert raw[:4] == b"\xd4\xc3\xb2\xa1" and struct.unpack_from("<HHiIII", raw, 4)[4:] == \
        (65535, 1)
    assert read_pcap(str(p)) == frames
    ts = [t for t, _f, _n in iter_pcap(raw)]
    assert ts == [1000.5, 1001.5, 1002.5]
    assert "UDP" in describe(frames[1])


def test_pcap_is_readable_by_tcpdump_or_tshark(tmp_path):
    import shutil
    tool = shutil.which("tshark") or shutil.which("tcpdump")
    if not tool:
        pytest.skip("neither tshark nor tcpdump is installed")
    p = tmp_path / "x.pcap"
    w = PcapWriter(str(p))
    w.write(udp4(b"hello", False))
    w.close()
    out = subprocess.run([tool, "-r", str(p)] + (["-n"] if "tcpdump" in tool else []),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "192.168.1.1" in out.stdout and "UDP" in out.stdout.upper()


def test_pcap_unwritable_path_is_one_line():
    with pytest.raises(PcapError, match="cannot write the capture file"):
        PcapWriter("/nonexistent-dir/x.pcap")


# ---- TAP ----------------------------------------------------------------------------
def test_tap_on_a_missing_bridge_says_how_to_fix_it():
    from qemu_xenpv.devices.tap import TapDevice, TapError
    with pytest.raises(TapError, match="does not exist on this host.*ip link add"):
        TapDevice("xpvtest0", "nosuchbr0")
    with pytest.raises(TapError, match="not a valid interface name"):
        TapDevice("xpvtest0", "bad/name")
