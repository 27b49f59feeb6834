"""netback (devices/netback.py) on the real XenStore, grant engine and event
channels, with two guests' netfronts done by hand (tests/unit/pvworld.py):
the handshake keys, TX and RX with request-rx-copy, multi-slot packets both
ways, checksum-offload flags, anti-spoofing, a frontend that posts no RX
buffers, and hostile frontends (bad grants, garbage slots, index garbage)
while the other guest keeps being served.  Plus the vif config syntax."""

from __future__ import annotations

import asyncio
import struct

import pytest

from qemu_xenpv.devices import netback
from qemu_xenpv.devices.netback import (NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY,
                                        NETRXF_csum_blank, NETRXF_data_validated,
                                        NETRXF_more_data, NETTXF_csum_blank,
                                        NETTXF_data_validated, NETTXF_extra_info,
                                        NETTXF_more_data, NetBackend, RX_QUEUE_MAX, RX_REQ,
                                        RX_RSP, TX_REQ, TX_RSP, parse_vif, parse_vifs)
from qemu_xenpv.devices.switch import checksum_ok, complete_checksum
from qemu_xenpv.devices.xenbus import DeviceSet, XenbusState as S
from qemu_xenpv.errors import ConfigError

from pvworld import FakeDomain, FakeHV, FrontRing, wait_for

MAC_A, MAC_B = "00:16:3e:00:00:0a", "00:16:3e:00:00:0b"
BCAST = b"\xff" * 6


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def frame(dst, src, payload=b"x" * 50, ethertype=0x88B5):
    return dst + src + struct.pack(">H", ethertype) + payload


def udp_frame(dst, src, payload, partial=False):
    """An IPv4/UDP frame 10.0.0.1:1000 -> 10.0.0.2:7; partial: only the
    pseudo-header sum in the checksum field (CHECKSUM_PARTIAL)."""
    ulen = 8 + len(payload)
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0x4000, 64, 17, 0,
                               bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    s = sum(struct.unpack(">10H", bytes(ip)))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into(">H", ip, 10, ~s & 0xFFFF)
    pseudo = 0x0A00 + 0x0001 + 0x0A00 + 0x0002 + 17 + ulen
    pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
    udp = struct.pack(">HHHH", 1000, 7, ulen, pseudo if partial else 0) + payload
    f = dst + src + b"\x08\x00" + bytes(ip) + udp
    return f if partial else complete_checksum(f)


class Netfront:
    """A guest's netfront by hand: rings, buffers, keys, event channel."""

    def __init__(self, dom, dev, nrx=16, ntx=16, sg=True, csum=True, rx_notify=True):
        self.dom, self.dev, self.hv = dom, dev, dom.hv
        self.tx_mfn, self.rx_mfn = dom.alloc_page(), dom.alloc_page()
        self.tx_ref, self.rx_ref = dom.grant(self.tx_mfn), dom.grant(self.rx_mfn)
        self.tx = FrontRing(dom, [self.tx_mfn], TX_REQ.size, TX_RSP.size)
        self.rx = FrontRing(dom, [self.rx_mfn], RX_REQ.size, RX_RSP.size)
        self.port = dom.evtchn.alloc_unbound(0)
        self.rx_pages = [dom.alloc_page() for _ in range(nrx)]
        self.rx_refs = [dom.grant(m) for m in self.rx_pages]
        self.tx_pages = [dom.alloc_page() for _ in range(ntx)]
        self.tx_refs = [dom.grant(m, readonly=True) for m in self.tx_pages]
        self.opts = dict(sg=sg, csum=csum, rx_notify=rx_notify)
        self.got = 0

    def w(self, key, value):
        self.hv.xenstore.write(f"{self.dev.fe_path}/{key}", str(value))

    def connect(self, post=True, state=S.Connected, **skip):
        if post:
            for i in range(len(self.rx_pages)):
                self.post_rx(i)
            self.rx.push()
        keys = {"tx-ring-ref": self.tx_ref, "rx-ring-ref": self.rx_ref,
                "event-channel": self.port, "request-rx-copy": 1,
                "feature-rx-notify": int(self.opts["rx_notify"]),
                "feature-sg": int(self.opts["sg"])}
        if not self.opts["csum"]:
            keys["feature-no-csum-offload"] = 1
        for k, v in keys.items():
            if k not in skip:
                self.w(k, v)
        self.w("state", int(state))

    def post_rx(self, i):
        self.rx.put(RX_REQ.pack(i, 0, self.rx_refs[i]))

    def kick(self):
        self.dom.evtchn.send(self.port)

    def send(self, data, flags=0, split=None, ids=None):
        """One packet; split: sizes of the data slots after the first."""
        split = split or []
        first = len(data) - sum(split)
        chunks, off = [], 0
        for n in [first] + split:
            chunks.append(data[off:off + n])
            off += n
        reqs = []
        for i, c in enumerate(chunks):
            self.dom.ram.write(self.tx_pages[i] << 12, c)
            more = NETTXF_more_data if i + 1 < len(chunks) else 0
            reqs.append(TX_REQ.pack(self.tx_refs[i], 0, (flags if i == 0 else 0) | more,
                                    (ids or range(100, 200))[i],
                                    len(data) if i == 0 else len(c)))
        return self.raw(reqs)

    def raw(self, reqs, kick=True):
        for r in reqs:
            self.tx.put(r)
        self.tx.push()
        if kick:
            self.kick()
        return [TX_RSP.unpack(r) for r in self.tx.responses(TX_RSP.size, want=len(reqs))]

    def receive(self, n=1, timeout=2.0):
        """n frames from the RX ring: (bytes, flags of the first slot)."""
        out, cur, cur_flags = [], b"", None
        while len(out) < n:
            rid, off, flags, status = RX_RSP.unpack(self._one_rx(timeout))
            assert status >= 0, f"RX slot status {status}"
            cur += self.dom.ram.read((self.rx_pages[rid] << 12) + off, status)
            cur_flags = flags if cur_flags is None else cur_flags
            if not flags & NETRXF_more_data:
                out.append((cur, cur_flags & ~NETRXF_more_data))
                cur, cur_flags = b"", None
        return out

    def _one_rx(self, timeout):
        r = self.rx
        wait_for(lambda: r.rsp_cons != r.rsp_prod, timeout, "an RX response")
        data = r._read(r._off(r.rsp_cons), RX_RSP.size)
        r.rsp_cons += 1
        self.dom.ram.w32(r.base + 12, r.rsp_cons + 1)
        return data

    def nothing_received(self):
        return self.rx.rsp_prod == self.rx.rsp_cons


@pytest.fixture
def hv():
    return FakeHV()


@pytest.fixture
def world(hv, make_ram):
    doms = []

    def make(domid, mac_, **spec):
        d = FakeDomain(hv, domid, make_ram(4 << 20), name=f"d{domid}")
        d.devices = DeviceSet(d)
        dev = NetBackend(d, 0, {"mac": mac_, **spec})
        d.devices.add(dev)
        doms.append(d)
        return d, dev

    yield make
    for d in doms:
        asyncio.run(d.devices.shutdown())
        d.destroy()


def pair(world, **kw):
    a, va = world(3, MAC_A)
    b, vb = world(4, MAC_B)
    fa, fb = Netfront(a, va, **kw), Netfront(b, vb, **kw)
    fa.connect()
    fb.connect()
    assert va.state == S.Connected and vb.state == S.Connected
    return fa, fb


# ---- the handshake -------------------------------------------------------------
def test_xenstore_keys_as_xl_writes_them(world, hv):
    d, dev = world(3, MAC_A, ip="10.0.0.3")
    be, fe = dev.be_path, dev.fe_path
    rd = lambda p: hv.xenstore.read(p)
    assert be == "/local/domain/0/backend/vif/3/0" and fe == "/local/domain/3/device/vif/0"
    assert rd(f"{fe}/mac") == MAC_A.encode() and rd(f"{be}/mac") == MAC_A.encode()
    assert rd(f"{fe}/backend") == be.encode() and rd(f"{fe}/backend-id") == b"0"
    assert rd(f"{be}/frontend") == fe.encode() and rd(f"{be}/handle") == b"0"
    assert rd(f"{be}/ip") == b"10.0.0.3"
    for k in ("feature-rx-copy", "feature-sg"):
        assert rd(f"{be}/{k}") == b"1"
    assert rd(f"{be}/feature-rx-flip") == b"0"
    assert rd(f"{be}/state") == b"2"                    # InitWait


def test_frontend_without_rx_copy_is_refused(world, hv):
    d, dev = world(3, MAC_A)
    f = Netfront(d, dev)
    f.connect(**{"request-rx-copy": None})
    assert dev.state == S.Closing
    assert b"request-rx-copy" in hv.xenstore.read(f"{dev.be_path}/error")


# ---- frames between two guests ---------------------------------------------------
def test_unicast_and_broadcast_between_guests(world):
    fa, fb = pair(world)
    f1 = frame(BCAST, mac(MAC_A), b"hello" * 20)
    assert fa.send(f1) == [(100, NETIF_RSP_OKAY)]
    assert fb.receive() == [(f1, 0)]
    f2 = frame(mac(MAC_A), mac(MAC_B), b"back" * 30)       # the switch learned A
    assert fb.send(f2) == [(100, NETIF_RSP_OKAY)]
    assert fa.receive() == [(f2, 0)]
    assert fa.dev.stats.tx_packets == 1 and fa.dev.stats.rx_packets == 1


def test_multi_slot_tx_is_reassembled(world):
    fa, fb = pair(world)
    f = frame(BCAST, mac(MAC_A), bytes(range(256)) * 8)     # 2062 bytes, 3 slots
    rsps = fa.send(f, split=[1000, 900], ids=[7, 8, 9])
    assert rsps == [(7, NETIF_RSP_OKAY), (8, NETIF_RSP_OKAY), (9, NETIF_RSP_OKAY)]
    assert fb.receive() == [(f, 0)]


def test_big_frame_is_split_over_rx_slots_for_an_sg_frontend(world):
    fa, fb = pair(world)
    f = frame(BCAST, mac(MAC_A), bytes(range(256)) * 24)    # 6158 bytes
    fa.send(f, split=[4000, 2000])
    got = fb.receive()
    assert got == [(f, 0)]


def test_big_frame_dropped_for_a_frontend_without_sg(world):
    fa, fb = pair(world, sg=False)
    f = frame(BCAST, mac(MAC_A), b"z" * 5000)
    fa.send(f, split=[4000, 1014])
    assert fb.nothing_received() and fb.dev.stats.rx_dropped == 1


def test_checksum_offload_flags(world, hv):
    a, va = world(3, MAC_A)
    b, vb = world(4, MAC_B)
    c, vc = world(5, "00:16:3e:00:00:0c")
    fa, fb, fc = Netfront(a, va), Netfront(b, vb), Netfront(c, vc, csum=False)
    for f in (fa, fb, fc):
        f.connect()
    partial = udp_frame(BCAST, mac(MAC_A), b"payload" * 10, partial=True)
    assert checksum_ok(partial) is False
    fa.send(partial, flags=NETTXF_csum_blank | NETTXF_data_validated)
    (got_b, flags_b), = fb.receive()
    assert got_b == partial and flags_b & NETRXF_csum_blank and flags_b & NETRXF_data_validated
    (got_c, flags_c), = fc.receive()                 # feature-no-csum-offload: completed
    assert checksum_ok(got_c) is True and not flags_c & NETRXF_csum_blank
    assert got_c == complete_checksum(partial)


def test_spoofed_source_mac_is_dropped(world):
    fa, fb = pair(world)
    rsps = fa.send(frame(BCAST, mac("00:16:3e:de:ad:01")))
    assert rsps == [(100, NETIF_RSP_OKAY)]               # the guest is not told
    assert fb.nothing_received()
    assert fa.dev.port_obj.spoofed == 1
    ok = frame(BCAST, mac(MAC_A))
    fa.send(ok)
    assert fb.receive() == [(ok, 0)]


def test_ip_antispoofing_with_ip_key(world):
    a, va = world(3, MAC_A, ip="10.0.0.1")
    b, vb = world(4, MAC_B)
    fa, fb = Netfront(a, va), Netfront(b, vb)
    fa.connect()
    fb.connect()
    good = udp_frame(BCAST, mac(MAC_A), b"ok")
    bad = bytearray(good)
    bad[26:30] = bytes([10, 0, 0, 99])                # someone else's source IP
    fa.send(bytes(bad))
    assert fb.nothing_received()
    fa.send(good)
    assert fb.receive()[0][0] == good


# ---- a frontend that stops posting RX buffers -----------------------------------
def test_no_rx_buffers_means_drops_not_a_stall(world, make_ram):
    a, va = world(3, MAC_A)
    b, vb = world(4, MAC_B)
    c, vc = world(5, "00:16:3e:00:00:0c")
    fa, fb, fc = Netfront(a, va), Netfront(b, vb), Netfront(c, vc)
    fa.connect()
    fb.connect(post=False)                             # b posts nothing
    fc.connect()
    for i in range(RX_QUEUE_MAX + 40):
        assert fa.send(frame(BCAST, mac(MAC_A), struct.pack(">I", i) * 20)) == \
            [(100, NETIF_RSP_OKAY)]
    assert vb.stats.rx_dropped >= 40 and len(vb.rxq) <= RX_QUEUE_MAX
    assert len(fc.receive(16)) == 16                   # c was served all along
    for i in range(len(fb.rx_pages)):                  # b posts late: it gets what was queued
        fb.post_rx(i)
    fb.rx.push()
    fb.kick()
    assert len(fb.receive(len(fb.rx_pages))) == len(fb.rx_pages)


# ---- hostile frontends ------------------------------------------------------------
def test_bad_grant_ref_gets_rsp_error(world):
    fa, fb = pair(world)
    rsps = fa.raw([TX_REQ.pack(0x7FFFFFF, 0, 0, 5, 60)])
    assert rsps == [(5, NETIF_RSP_ERROR)]
    assert fa.dev.state == S.Connected and fa.dev.stats.tx_errors == 1
    ok = frame(BCAST, mac(MAC_A))
    fa.send(ok)
    assert fb.receive() == [(ok, 0)]


def test_short_frame_and_too_many_slots_get_rsp_error(world):
    fa, fb = pair(world)
    assert fa.raw([TX_REQ.pack(fa.tx_refs[0], 0, 0, 1, 4)]) == [(1, NETIF_RSP_ERROR)]
    many = [TX_REQ.pack(fa.tx_refs[0], 0, NETTXF_more_data if i < 29 else 0, i,
                        30 * 60 if i == 0 else 60) for i in range(30)]
    rsps = fa.raw(many)
    assert rsps == [(i, NETIF_RSP_ERROR) for i in range(30)]
    inconsistent = [TX_REQ.pack(fa.tx_refs[0], 0, NETTXF_more_data, 1, 100),
                    TX_REQ.pack(fa.tx_refs[1], 0, 0, 2, 500)]
    assert fa.raw(inconsistent) == [(1, NETIF_RSP_ERROR), (2, NETIF_RSP_ERROR)]
    assert fa.dev.state == S.Connected and fb.nothing_received()


def test_extra_info_slots_get_null_responses(world):
    fa, fb = pair(world)
    f = frame(BCAST, mac(MAC_A))
    fa.dom.ram.write(fa.tx_pages[0] << 12, f)
    mcast = bytes([2, 0]) + b"\x01\x00\x5e\x00\x00\x01"      # MCAST_ADD, last extra
    rsps = fa.raw([TX_REQ.pack(fa.tx_refs[0], 0, NETTXF_extra_info, 3, len(f)), mcast])
    assert rsps == [(3, NETIF_RSP_OKAY), (0, NETIF_RSP_NULL)]
    assert fb.receive() == [(f, 0)]
    gso = bytes([1, 0]) + struct.pack("<HBBH", 1448, 1, 0, 0)  # GSO was not offered
    rsps = fa.raw([TX_REQ.pack(fa.tx_refs[0], 0, NETTXF_extra_info, 4, len(f)), gso])
    assert rsps == [(4, NETIF_RSP_ERROR), (0, NETIF_RSP_NULL)]


@pytest.mark.parametrize("evil", ["crosses-page", "runs-past-prod", "index-garbage"])
def test_fatal_frontend_errors_disconnect_only_that_vif(world, hv, make_ram, evil):
    a, va = world(3, MAC_A)
    b, vb = world(4, MAC_B)
    c, vc = world(5, "00:16:3e:00:00:0c")
    fa, fb, fc = Netfront(a, va), Netfront(b, vb), Netfront(c, vc)
    for f in (fa, fb, fc):
        f.connect()
    if evil == "crosses-page":
        fa.tx.put(TX_REQ.pack(fa.tx_refs[0], 4000, 0, 1, 200))
        fa.tx.push()
    elif evil == "runs-past-prod":
        fa.tx.put(TX_REQ.pack(fa.tx_refs[0], 0, NETTXF_more_data, 1, 200))
        fa.tx.push()
    else:
        fa.tx.push(prod=0x12345)
    fa.kick()
    assert va.state == S.Closing and va.error
    assert hv.xenstore.read(f"{va.be_path}/error")
    ok = frame(BCAST, mac(MAC_B))
    fb.send(ok)
    assert fc.receive() == [(ok, 0)]                   # the others carry on
    assert fa.nothing_received()


def test_rx_ring_index_garbage_disconnects(world):
    fa, fb = pair(world)
    fb.rx.push(prod=0x54321)
    fa.send(frame(BCAST, mac(MAC_A)))
    assert fb.dev.state == S.Closing
    assert fa.dev.state == S.Connected


def test_frontend_close_and_reconnect(world):
    fa, fb = pair(world)
    fa.w("state", int(S.Closing))
    assert fa.dev.state == S.Closing
    fa.w("state", int(S.Closed))
    assert fa.dev.state == S.Closed and fa.dev.tx is None
    fb.send(frame(BCAST, mac(MAC_B)))                  # to a closed vif: dropped
    fa.w("state", int(S.Initialising))
    assert fa.dev.state == S.InitWait
    f2 = Netfront(fa.dom, fa.dev)
    f2.connect()
    assert fa.dev.state == S.Connected
    ok = frame(BCAST, mac(MAC_B))
    fb.send(ok)
    assert f2.receive() == [(ok, 0)]


def test_pcap_records_both_directions(world, tmp_path):
    from qemu_xenpv.devices.pcap import read_pcap
    path = tmp_path / "a.pcap"
    a, va = world(3, MAC_A, pcap=str(path))
    b, vb = world(4, MAC_B)
    fa, fb = Netfront(a, va), Netfront(b, vb)
    fa.connect()
    fb.connect()
    f1 = frame(BCAST, mac(MAC_A), b"one" * 20)
    f2 = frame(mac(MAC_A), mac(MAC_B), b"two" * 20)
    fa.send(f1)
    fb.receive()
    fb.send(f2)
    fa.receive()
    partial = udp_frame(BCAST, mac(MAC_A), b"csum", partial=True)
    fa.send(partial, flags=NETTXF_csum_blank)
    assert read_pcap(str(path)) == [f1, f2, complete_checksum(partial)]


# ---- config -----------------------------------------------------------------------
def test_vif_spec_parsing():
    v = parse_vif("mac=00:16:3E:AA:bb:01, bridge=br0,ip=10.0.0.2/24")
    assert v == {"mac": "00:16:3e:aa:bb:01", "bridge": "br0", "ip": "10.0.0.2/24"}
    r = parse_vif("")
    assert r["mac"].startswith("00:16:3e:") and int(r["mac"].split(":")[3], 16) < 0x80
    warnings = []
    parse_vif("script=vif-bridge,model=e1000", warnings=warnings)
    assert len(warnings) == 2
    for bad, msg in [("mac=00:16:3e:00:00", "not a MAC"), ("mac=01:00:5e:00:00:01", "multicast"),
                     ("brigde=br0", "did you mean 'bridge'"), ("ip=1.2.3", "not an IP"),
                     ("bridge=way-too-long-bridge-name", "not a valid interface"),
                     ("junk", "not key=value")]:
        with pytest.raises(ConfigError, match=msg):
            parse_vif(bad)
    with pytest.raises(ConfigError, match="used twice"):
        parse_vifs(["mac=00:16:3e:00:00:01", "mac=00:16:3e:00:00:01"])


def test_config_file_vif_round_trip():
    from qemu_xenpv.config import from_values, parse_config
    cfg = parse_config('kernel = "/k"\nvif = ["ip=10.1.1.1", ""]\n')
    assert len(cfg.vifs) == 2 and not cfg.warnings
    again = from_values(cfg.to_dict())
    assert [v["mac"] for v in again.vifs] == [v["mac"] for v in cfg.vifs]   # stable MACs
    assert again.vifs[0]["ip"] == "10.1.1.1"
