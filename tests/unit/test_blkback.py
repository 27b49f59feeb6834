"""blkback (devices/blkback.py) and its images (devices/storage.py) without
QEMU: a frontend done by hand on the real XenStore, grant engine and event
channels, raw images in tmp_path (qcow2 through qemu-storage-daemon when
it is installed).  Every blkif operation, every refusal, persistent
grants, multi-page rings, the x86_32 layouts; the disk specs as xm and xl
write them; virtual device numbers; exclusive opening."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess

import pytest

from qemu_xenpv import abi
from qemu_xenpv.devices import storage
from qemu_xenpv.devices.blkback import (BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE,
                                        BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
                                        BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP,
                                        BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkBackend)
from qemu_xenpv.devices.storage import (RawImage, parse_disk_list, parse_disk_spec,
                                        vdev_to_devid)
from qemu_xenpv.devices.xenbus import DeviceSet, XenbusState as S
from qemu_xenpv.errors import ConfigError, XenPVError

from pvworld import FakeDomain, FakeHV, FrontRing, wait_for

SECTOR = 512
REQ = struct.Struct("<BBHQQ")                   # i386 blkif_request header
SEG = struct.Struct("<IBBxx")
DISCARD = struct.Struct("<BBHQQQ")
INDIRECT = struct.Struct("<BBHQQH2x8I")
RSP = struct.Struct("<QBxh")


def rw(op, rid, sector, segs):
    """A blkif_request: segs = [(gref, first, last)]."""
    body = REQ.pack(op, len(segs), 0, rid, sector)
    for s in segs[:11]:
        body += SEG.pack(*s)
    return body.ljust(108, b"\0")


# ---------------------------------------------------------------------------
# specs and device numbers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("vdev,devid", [
    ("xvda", 51712), ("xvdb", 51728), ("xvdp", 51952), ("xvda1", 51713), ("xvdq", 268439552),
    ("xvdaa", (1 << 28) | (26 << 8)), ("hda", 768), ("hdb", 832), ("hdc", 5632), ("hdd", 5696),
    ("sda", 2048), ("sdb", 2064), ("sda1", 2049), ("51712", 51712), ("202", 202)])
def test_vdev_numbers(vdev, devid):
    assert vdev_to_devid(vdev) == devid


@pytest.mark.parametrize("bad", ["", "xvd", "vda", "xvdA", "0", "-1", "sda99", "xvda 1"])
def test_bad_vdev(bad):
    with pytest.raises(ValueError):
        vdev_to_devid(bad)


@pytest.mark.parametrize("spec,want", [
    ("file:/img/a.img,xvda,w", ("/img/a.img", "xvda", "raw", "w", "disk", "file")),
    ("phy:/dev/vg/lv,xvdb,r", ("/dev/vg/lv", "xvdb", "raw", "r", "disk", "phy")),
    ("format=qcow2,vdev=xvdc,target=/p/x.qcow2", ("/p/x.qcow2", "xvdc", "qcow2", "w", "disk",
                                                  "file")),
    ("format=raw, vdev=hda, access=ro, target=/a,b c.img",
     ("/a,b c.img", "hda", "raw", "r", "disk", "file")),
    ("/i.qcow2,qcow2,xvdd,rw", ("/i.qcow2", "xvdd", "qcow2", "w", "disk", "file")),
    ("/i.img,,xvde,w", ("/i.img", "xvde", "raw", "w", "disk", "file")),
    ("tap:aio:/i.img,xvdf,w", ("/i.img", "xvdf", "raw", "w", "disk", "file")),
    ("tap:qcow2:/i.q,xvdg,w", ("/i.q", "xvdg", "qcow2", "w", "disk", "file")),
    ("qcow2:/i.q,xvdh,w", ("/i.q", "xvdh", "qcow2", "w", "disk", "file")),
    ("file:/cd.iso,hdc:cdrom,r", ("/cd.iso", "hdc", "raw", "r", "cdrom", "file")),
    ("vdev=xvdi,devtype=cdrom,target=/cd.iso", ("/cd.iso", "xvdi", "raw", "r", "cdrom", "file")),
    ("file:/s.img,xvdj,w!", ("/s.img", "xvdj", "raw", "w!", "disk", "file")),
    ("format=vhd,vdev=xvdk,access=r,backendtype=phy,target=/v.vhd",
     ("/v.vhd", "xvdk", "vhd", "r", "disk", "phy")),
])
def test_disk_specs(spec, want):
    d = parse_disk_spec(spec)
    assert (d.target, d.vdev, d.format, d.access, d.devtype, d.backendtype) == want
    assert d.devid == vdev_to_devid(d.vdev)
    again = parse_disk_spec(d.canonical())          # what the CLI sends the daemon
    assert (again.target, again.vdev, again.format, again.access, again.devtype) == want[:5]


def test_relative_target_is_resolved_against_the_config(tmp_path):
    d = parse_disk_spec("file:disks/a.img,xvda,w", str(tmp_path))
    assert d.target == str(tmp_path / "disks" / "a.img")


@pytest.mark.parametrize("spec,needle", [
    ("", "empty"), ("file:/a", "no virtual device"), ("xvda,w", "not a virtual device"),
    ("format=qcow3,vdev=xvda,target=/a", "format 'qcow3'"),
    ("vdev=xvda,access=x,target=/a", "access 'x'"),
    ("nfs:/a,xvda,w", "unknown disk prefix 'nfs:'"),
    ("vdev=xvda,colour=red,target=/a", "unknown disk parameter 'colour'"),
    ("/a,xvda,w,extra", "unexpected 'extra'"),
    ("vdev=xvda,devtype=cdrom,access=w,target=/a", "cdrom is read-only"),
])
def test_bad_disk_specs(spec, needle):
    with pytest.raises(ValueError, match=needle):
        parse_disk_spec(spec)


def test_disk_list_errors_name_the_element():
    with pytest.raises(ConfigError, match=r"c.cfg: disk 'file:/a': no virtual device"):
        parse_disk_list(["file:/a"], "c.cfg")
    with pytest.raises(ConfigError, match="51712 is given twice \\(as xvda\\)"):
        parse_disk_list(["file:/a,xvda,w", "/b,51712,r"], "c.cfg")
    with pytest.raises(ConfigError, match="must be a list"):
        parse_disk_list(3, "c.cfg")
    assert [d.vdev for d in parse_disk_list("file:/a,xvda,w")] == ["xvda"]


def test_config_file_disks(tmp_path):
    from qemu_xenpv.config import from_values, parse_config
    cfg = parse_config('kernel = "/k"\ndisk = ["file:a.img,xvda,w", '
                       '"format=qcow2,vdev=xvdb,access=r,target=/q.qcow2"]\n',
                       str(tmp_path / "d.cfg"))
    assert not cfg.warnings
    assert [(d.vdev, d.target, d.format, d.access) for d in cfg.disks] == [
        ("xvda", str(tmp_path / "a.img"), "raw", "w"), ("xvdb", "/q.qcow2", "qcow2", "r")]
    again = from_values(cfg.to_dict(), "<daemon>", "/elsewhere")
    assert [d.canonical() for d in again.disks] == [d.canonical() for d in cfg.disks]


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------
def mkimg(tmp_path, name="a.img", sectors=2048, data=None):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(sectors * SECTOR)
        if data:
            f.write(data)
    return p


def test_exclusive_write_open(tmp_path):
    p = mkimg(tmp_path)
    a = RawImage(str(p), readonly=False, owner="domain 'a'")
    try:
        with pytest.raises(XenPVError, match="already in use by domain 'a' \\(access w\\)"):
            RawImage(str(p), readonly=True, owner="domain 'b'")
        with pytest.raises(XenPVError, match="already in use by domain 'a'"):
            RawImage(str(p), readonly=False, owner="domain 'b'")
        # another process (another daemon) is refused by the flock
        r = subprocess.run(["flock", "-n", "-s", str(p), "true"])
        assert r.returncode != 0
    finally:
        a.close()
    r1 = RawImage(str(p), readonly=True, owner="domain 'c'")
    r2 = RawImage(str(p), readonly=True, owner="domain 'd'")          # readers share
    with pytest.raises(XenPVError, match="already in use"):
        RawImage(str(p), readonly=False, owner="domain 'e'")
    r1.close()
    r2.close()
    RawImage(str(p), readonly=False, owner="domain 'f'").close()


def test_image_open_errors(tmp_path):
    with pytest.raises(XenPVError, match="does not exist"):
        RawImage(str(tmp_path / "nope.img"), False)
    with pytest.raises(XenPVError, match="is a directory"):
        RawImage(str(tmp_path), False)


def test_raw_io_discard_flush(tmp_path):
    p = mkimg(tmp_path, sectors=64)
    img = RawImage(str(p), False)
    try:
        a, b = bytearray(b"A" * 4096), bytearray(b"B" * 1024)
        img.writev([memoryview(a), memoryview(b)], 512)
        img.flush()
        assert p.read_bytes()[512:512 + 5120] == bytes(a + b)
        out = [memoryview(bytearray(512)), memoryview(bytearray(512))]
        img.readv(out, 4096)
        assert bytes(out[0]) == b"A" * 512 and bytes(out[1]) == b"B" * 512
        img.discard(0, 8192)
        assert p.read_bytes()[:8192] == bytes(8192)
    finally:
        img.close()


# ---------------------------------------------------------------------------
# the back end with a hand-made frontend
# ---------------------------------------------------------------------------
class Front:
    """A blkfront by hand: ring pages, data pages, grants, XenStore keys."""

    def __init__(self, dom, dev, order=0, persistent=True, protocol="x86_32-abi"):
        self.dom, self.dev, self.hv = dom, dev, dom.hv
        self.ring_mfns = [dom.alloc_page() for _ in range(1 << order)]
        self.ring_refs = [dom.grant(m) for m in self.ring_mfns]
        self.data = [dom.alloc_page() for _ in range(16)]
        self.refs = [dom.grant(m) for m in self.data]
        self.port = dom.evtchn.alloc_unbound(0)
        self.ring = FrontRing(dom, self.ring_mfns, 108, 12)
        self.next_id = 1
        w = lambda k, v: self.hv.xenstore.write(f"{dev.fe_path}/{k}", str(v))
        if order:
            w("ring-page-order", order)
            for i, r in enumerate(self.ring_refs):
                w(f"ring-ref{i}", r)
        else:
            w("ring-ref", self.ring_refs[0])
        w("event-channel", self.port)
        if protocol:
            w("protocol", protocol)
        w("feature-persistent", 1 if persistent else 0)
        w("state", int(S.Initialised))

    def page(self, i, off=0, n=4096):
        return self.dom.ram.read((self.data[i] << 12) + off, n)

    def fill(self, i, data, off=0):
        self.dom.ram.write((self.data[i] << 12) + off, data)

    def submit(self, *reqs):
        """Requests (bytes) -> [(id, op, status)] in order."""
        for r in reqs:
            self.ring.put(r)
        self.ring.push()
        self.dom.evtchn.send(self.port)
        return [RSP.unpack(x) for x in self.ring.responses(12, want=len(reqs))]

    def one(self, req):
        return self.submit(req)[0][2]


@pytest.fixture
def hv():
    return FakeHV()


@pytest.fixture
def dom(hv, make_ram):
    d = FakeDomain(hv, 5, make_ram(8 << 20), name="five")
    d.devices = DeviceSet(d)
    yield d
    asyncio.run(d.devices.shutdown())
    d.destroy()


def disk(dom, path, vdev="xvda", access="w", fmt="raw"):
    spec = parse_disk_spec(f"format={fmt},vdev={vdev},access={access},target={path}")
    dev = BlkBackend(dom, spec, storage.open_image(spec, "/nonexistent", "t", "test"))
    dom.devices.add(dev)
    return dev


def test_backend_keys_and_connect(hv, dom, tmp_path):
    dev = disk(dom, mkimg(tmp_path))
    be = dev.be_path
    rd = lambda k: hv.xenstore.read(f"{be}/{k}")
    assert rd("state") == b"2"
    for k, v in (("feature-flush-cache", b"1"), ("feature-barrier", b"1"),
                 ("feature-discard", b"1"), ("discard-granularity", b"4096"),
                 ("feature-max-indirect-segments", b"256"), ("max-ring-page-order", b"4"),
                 ("feature-persistent", b"1"), ("mode", b"w"), ("dev", b"xvda"),
                 ("type", b"file"), ("sector-size", b"512"), ("physical-sector-size", b"512")):
        assert rd(k) == v, k
    assert hv.xenstore.read(f"{dev.fe_path}/virtual-device") == b"51712"
    assert hv.xenstore.read(f"{dev.fe_path}/device-type") == b"disk"
    Front(dom, dev)
    assert dev.state == S.Connected
    assert rd("sectors") == b"2048" and rd("info") == b"0"


def test_read_write_roundtrip(hv, dom, tmp_path):
    p = mkimg(tmp_path)
    dev = disk(dom, p)
    f = Front(dom, dev)
    f.fill(0, b"\x11" * 4096)
    f.fill(1, b"\x22" * 4096)
    # segment 0: sectors 2..7 of page 0; segment 1: sectors 0..1 of page 1
    assert f.submit(rw(BLKIF_OP_WRITE, 7, 100, [(f.refs[0], 2, 7), (f.refs[1], 0, 1)])) == \
        [(7, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]
    img = p.read_bytes()
    assert img[100 * SECTOR:106 * SECTOR] == b"\x11" * 6 * SECTOR
    assert img[106 * SECTOR:108 * SECTOR] == b"\x22" * 2 * SECTOR
    assert img[108 * SECTOR:109 * SECTOR] == bytes(SECTOR)
    assert f.one(rw(BLKIF_OP_READ, 8, 104, [(f.refs[2], 4, 7)])) == BLKIF_RSP_OKAY
    assert f.page(2, 4 * SECTOR, 2 * SECTOR) == b"\x11" * 2 * SECTOR
    assert f.page(2, 6 * SECTOR, 2 * SECTOR) == b"\x22" * 2 * SECTOR
    assert f.page(2, 0, 4 * SECTOR) == bytes(4 * SECTOR)        # outside the segment: untouched
    assert dev.stats["read_bytes"] == 4 * SECTOR and dev.stats["write_bytes"] == 8 * SECTOR


def test_persistent_grants_stay_mapped_until_disconnect(hv, dom, tmp_path):
    dev = disk(dom, mkimg(tmp_path))
    f = Front(dom, dev)
    for _ in range(3):
        assert f.one(rw(BLKIF_OP_READ, 1, 0, [(f.refs[0], 0, 7), (f.refs[1], 0, 7)])) == 0
    assert set(dev.pgrants) == {f.refs[0], f.refs[1]}
    assert len(hv.grants.mappings(dom.domid)) == 2 + 1          # + the ring
    assert dom.grant_flags(f.refs[0]) & abi.GTF_writing
    hv.xenstore.write(f"{dev.fe_path}/state", str(int(S.Closed)))
    assert not hv.grants.mappings(dom.domid) and not dev.pgrants
    assert not dom.grant_flags(f.refs[0]) & (abi.GTF_reading | abi.GTF_writing)


def test_without_persistent_each_request_maps_and_unmaps(hv, dom, tmp_path):
    dev = disk(dom, mkimg(tmp_path))
    f = Front(dom, dev, persistent=False)
    assert f.one(rw(BLKIF_OP_READ, 1, 0, [(f.refs[0], 0, 7)])) == 0
    assert not dev.pgrants and len(hv.grants.mappings(dom.domid)) == 1     # the ring only
    assert not dom.grant_flags(f.refs[0]) & (abi.GTF_reading | abi.GTF_writing)


def test_readonly_grant_for_a_write_is_fine_for_a_read_it_is_refused(hv, dom, tmp_path):
    p = mkimg(tmp_path)
    dev = disk(dom, p)
    f = Front(dom, dev)
    ro = dom.grant(f.data[3], readonly=True)
    f.fill(3, b"R" * 4096)
    assert f.one(rw(BLKIF_OP_WRITE, 1, 8, [(ro, 0, 0)])) == BLKIF_RSP_OKAY
    assert p.read_bytes()[8 * SECTOR:9 * SECTOR] == b"R" * SECTOR
    assert f.one(rw(BLKIF_OP_READ, 2, 8, [(ro, 0, 0)])) == BLKIF_RSP_ERROR
    assert ro not in dev.pgrants


def test_flush_barrier_and_ordering(hv, dom, tmp_path, monkeypatch):
    p = mkimg(tmp_path)
    dev = disk(dom, p)
    f = Front(dom, dev)
    calls = []
    real_flush, real_write = dev.image.flush, dev.image.writev
    monkeypatch.setattr(dev.image, "flush", lambda: (calls.append("flush"), real_flush())[1])
    monkeypatch.setattr(dev.image, "writev",
                        lambda b, o: (calls.append(f"write@{o // SECTOR}"), real_write(b, o))[1])
    res = f.submit(rw(BLKIF_OP_WRITE, 1, 0, [(f.refs[0], 0, 0)]),
                   rw(BLKIF_OP_WRITE_BARRIER, 2, 1, [(f.refs[0], 0, 0)]),
                   rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, []),
                   rw(BLKIF_OP_WRITE_BARRIER, 4, 0, []),
                   rw(BLKIF_OP_FLUSH_DISKCACHE, 5, 2, [(f.refs[0], 0, 0)]))
    assert [(r[0], r[1], r[2]) for r in res] == [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 2, 0),
                                                 (5, 3, 0)]
    # barrier or flush with data (a FUA write) = flush, write, flush; without data = a flush
    assert calls == ["write@0", "flush", "write@1", "flush", "flush", "flush",
                     "flush", "write@2", "flush"]


def test_discard(hv, dom, tmp_path):
    p = mkimg(tmp_path, data=b"\xff" * 8192)
    dev = disk(dom, p)
    f = Front(dom, dev)
    assert f.one(DISCARD.pack(BLKIF_OP_DISCARD, 0, 0, 9, 8, 8).ljust(108, b"\0")) == 0
    assert p.read_bytes()[:8192] == b"\xff" * 4096 + bytes(4096)
    assert f.one(DISCARD.pack(BLKIF_OP_DISCARD, 1, 0, 9, 0, 8).ljust(108, b"\0")) == \
        BLKIF_RSP_EOPNOTSUPP                                        # secure: not offered
    assert f.one(DISCARD.pack(BLKIF_OP_DISCARD, 0, 0, 9, 2040, 9).ljust(108, b"\0")) == \
        BLKIF_RSP_ERROR                                             # past the end


def test_indirect(hv, dom, tmp_path):
    p = mkimg(tmp_path)
    dev = disk(dom, p)
    f = Front(dom, dev)
    table = dom.alloc_page()
    tref = dom.grant(table, readonly=True)
    segs = b"".join(SEG.pack(f.refs[i], 0, 7) for i in range(14))
    dom.ram.write(table << 12, segs)
    for i in range(14):
        f.fill(i, bytes([i + 1]) * 4096)
    req = INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_WRITE, 14, 5, 16, 0, tref, 0, 0, 0, 0, 0,
                        0, 0).ljust(108, b"\0")
    assert f.submit(req) == [(5, BLKIF_OP_WRITE, 0)]                # answered as the inner op
    img = p.read_bytes()
    for i in range(14):
        assert img[(16 + 8 * i) * SECTOR:(24 + 8 * i) * SECTOR] == bytes([i + 1]) * 4096
    bad = [INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_WRITE, 257, 5, 16, 0, tref, *[0] * 7),
           INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_WRITE, 0, 5, 16, 0, tref, *[0] * 7),
           INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_DISCARD, 4, 5, 16, 0, tref, *[0] * 7),
           INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_READ, 4, 5, 16, 0, 4000, *[0] * 7),
           INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_READ, 14, 5, 2040, 0, tref, *[0] * 7)]
    assert [r[2] for r in f.submit(*[b.ljust(108, b"\0") for b in bad])] == [BLKIF_RSP_ERROR] * 5


@pytest.mark.parametrize("make_req,status", [
    (lambda f: rw(BLKIF_OP_READ, 1, 0, [(99999, 0, 7)]), BLKIF_RSP_ERROR),       # bad gref
    (lambda f: rw(BLKIF_OP_READ, 1, 0, [(f.refs[0], 0, 7), (300, 0, 7)]), BLKIF_RSP_ERROR),
    (lambda f: rw(BLKIF_OP_READ, 1, 0, [(f.refs[0], 3, 2)]), BLKIF_RSP_ERROR),   # first > last
    (lambda f: rw(BLKIF_OP_READ, 1, 0, [(f.refs[0], 0, 8)]), BLKIF_RSP_ERROR),   # last > 7
    (lambda f: rw(BLKIF_OP_READ, 1, 2047, [(f.refs[0], 0, 1)]), BLKIF_RSP_ERROR),  # past the end
    (lambda f: rw(BLKIF_OP_WRITE, 1, 2 ** 64 - 1, [(f.refs[0], 0, 0)]), BLKIF_RSP_ERROR),
    (lambda f: rw(BLKIF_OP_READ, 1, 0, []), BLKIF_RSP_ERROR),                    # no segments
    (lambda f: REQ.pack(BLKIF_OP_READ, 12, 0, 1, 0).ljust(108, b"\0"), BLKIF_RSP_ERROR),
    (lambda f: rw(4, 1, 0, [(f.refs[0], 0, 7)]), BLKIF_RSP_EOPNOTSUPP),
    (lambda f: rw(250, 1, 0, [(f.refs[0], 0, 7)]), BLKIF_RSP_EOPNOTSUPP),
])
def test_bad_requests_touch_nothing(hv, dom, tmp_path, make_req, status):
    p = mkimg(tmp_path, data=b"\x5a" * 4096)
    before = p.read_bytes()
    dev = disk(dom, p)
    f = Front(dom, dev)
    f.fill(0, b"\xa5" * 4096)
    assert f.one(make_req(f)) == status
    assert p.read_bytes() == before
    assert f.page(0) == b"\xa5" * 4096
    assert f.one(rw(BLKIF_OP_READ, 2, 0, [(f.refs[1], 0, 0)])) == BLKIF_RSP_OKAY  # still served
    assert not [m for m in hv.grants.mappings(dom.domid) if m.ref not in
                dev.pgrants and m not in dev.ring_maps]            # nothing left mapped


def test_readonly_disk_refuses_writes(hv, dom, tmp_path):
    p = mkimg(tmp_path, data=b"\x5a" * 4096)
    before = p.read_bytes()
    dev = disk(dom, p, access="r")
    assert hv.xenstore.read(f"{dev.be_path}/mode") == b"r"
    assert hv.xenstore.read(f"{dev.be_path}/feature-discard") == b"0"
    f = Front(dom, dev)
    assert hv.xenstore.read(f"{dev.be_path}/info") == b"4"          # VDISK_READONLY
    res = f.submit(rw(BLKIF_OP_WRITE, 1, 0, [(f.refs[0], 0, 7)]),
                   rw(BLKIF_OP_WRITE_BARRIER, 2, 0, [(f.refs[0], 0, 7)]),
                   rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, [(f.refs[0], 0, 7)]),
                   DISCARD.pack(BLKIF_OP_DISCARD, 0, 0, 3, 0, 8).ljust(108, b"\0"),
                   INDIRECT.pack(BLKIF_OP_INDIRECT, BLKIF_OP_WRITE, 1, 5, 0, 0,
                                 f.refs[1], *[0] * 7).ljust(108, b"\0"),
                   rw(BLKIF_OP_READ, 4, 0, [(f.refs[0], 0, 7)]),
                   rw(BLKIF_OP_FLUSH_DISKCACHE, 6, 0, []))      # nothing to flush: fine
    assert [r[2] for r in res] == [BLKIF_RSP_ERROR] * 5 + [BLKIF_RSP_OKAY] * 2
    assert p.read_bytes() == before and f.page(0) == b"\x5a" * 4096


def test_page_table_frame_cannot_be_written(hv, dom, tmp_path):
    dev = disk(dom, mkimg(tmp_path, data=b"\x77" * 4096))
    f = Front(dom, dev)
    pt = dom.alloc_page()
    dom.page_tables.add(pt)
    ref = dom.grant(pt)
    assert f.one(rw(BLKIF_OP_READ, 1, 0, [(ref, 0, 7)])) == BLKIF_RSP_ERROR
    assert dom.ram.read(pt << 12, 4096) == bytes(4096)


def test_multi_page_ring_and_many_requests(hv, dom, tmp_path):
    p = mkimg(tmp_path)
    dev = disk(dom, p)
    f = Front(dom, dev, order=3)
    assert dev.ring.nr_ents == 256
    for i in range(16):
        f.fill(i, bytes([i]) * 4096)
    for batch in range(3):                      # 600 requests: round the ring twice
        reqs = [rw(BLKIF_OP_WRITE, 1000 * batch + i, (i % 200) * 8, [(f.refs[i % 16], 0, 7)])
                for i in range(200)]
        res = f.submit(*reqs)
        assert [r[0] for r in res] == [1000 * batch + i for i in range(200)]
        assert all(r[2] == 0 for r in res)
    img = p.read_bytes()
    assert img[(199 * 8) * SECTOR:(200 * 8) * SECTOR] == bytes([199 % 16]) * 4096


def test_x86_64_protocol_is_refused(hv, dom, tmp_path):
    dev = disk(dom, mkimg(tmp_path))
    Front(dom, dev, protocol="x86_64-abi")
    assert dev.state == S.Closing
    assert b"x86_64-abi" in hv.xenstore.read(f"{dev.be_path}/error")


def test_ring_garbage_closes_the_device(hv, dom, tmp_path):
    dev = disk(dom, mkimg(tmp_path))
    other = disk(dom, mkimg(tmp_path, "b.img"), vdev="xvdb")
    f, g = Front(dom, dev), Front(dom, other)
    f.ring.push(prod=33)                        # a 32-entry ring: 33 ahead is garbage
    dom.evtchn.send(f.port)
    wait_for(lambda: dev.state == S.Closing, what="the device closing")
    assert b"ring protocol" in hv.xenstore.read(f"{dev.be_path}/error")
    assert not [m for m in hv.grants.mappings(dom.domid) if m in dev.ring_maps]
    assert g.one(rw(BLKIF_OP_READ, 1, 0, [(g.refs[0], 0, 7)])) == BLKIF_RSP_OKAY


def test_destroy_closes_the_image(hv, dom, tmp_path):
    p = mkimg(tmp_path)
    dev = disk(dom, p)
    f = Front(dom, dev)
    f.fill(0, b"Z" * 4096)
    assert f.one(rw(BLKIF_OP_WRITE, 1, 0, [(f.refs[0], 0, 7)])) == 0
    asyncio.run(dom.devices.shutdown())
    assert dev.image.fd == -1 and not hv.grants.mappings(dom.domid)
    RawImage(str(p), False).close()             # the lock is gone
    assert p.read_bytes()[:4096] == b"Z" * 4096


@pytest.mark.skipif(not (shutil.which("qemu-img") and storage.qemu_storage_daemon()),
                    reason="needs qemu-img and qemu-storage-daemon")
def test_qcow2_through_qemu_storage_daemon(hv, dom, tmp_path):
    q = tmp_path / "q.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(q), "4M"], check=True)
    spec = parse_disk_spec(f"format=qcow2,vdev=xvdb,access=w,target={q}")
    image = storage.open_image(spec, str(tmp_path / "nbd"), "t", "domain 'x'")
    assert not os.listdir(tmp_path / "nbd")             # the socket name is gone once connected
    dev = BlkBackend(dom, spec, image)
    dom.devices.add(dev)
    assert hv.xenstore.read(f"{dev.be_path}/type") == b"qdisk"
    f = Front(dom, dev)
    assert hv.xenstore.read(f"{dev.be_path}/sectors") == b"8192"
    f.fill(0, b"Q" * 4096)
    assert f.one(rw(BLKIF_OP_WRITE_BARRIER, 1, 64, [(f.refs[0], 0, 7)])) == 0
    assert f.one(rw(BLKIF_OP_READ, 2, 64, [(f.refs[1], 0, 7)])) == 0
    assert f.page(1) == b"Q" * 4096
    assert f.one(rw(BLKIF_OP_READ, 3, 8191, [(f.refs[1], 0, 1)])) == BLKIF_RSP_ERROR
    for i in range(16):                                 # a whole 64 KiB qcow2 cluster
        f.fill(i, b"C" * 4096)
    assert f.one(rw(BLKIF_OP_WRITE, 4, 128, [(f.refs[i], 0, 7) for i in range(11)])) == 0
    assert f.one(rw(BLKIF_OP_WRITE, 5, 216, [(f.refs[i], 0, 7) for i in range(5)])) == 0
    assert f.one(DISCARD.pack(BLKIF_OP_DISCARD, 0, 0, 6, 128, 128).ljust(108, b"\0")) == 0
    with pytest.raises(XenPVError, match="already in use"):
        storage.open_image(spec, str(tmp_path / "nbd"), "t2", "domain 'y'")
    proc = image.proc
    asyncio.run(dom.devices.shutdown())
    assert proc.poll() is not None                      # stopped with the device
    out = tmp_path / "q.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(q), str(out)], check=True)
    data = out.read_bytes()
    assert data[64 * SECTOR:72 * SECTOR] == b"Q" * 4096
    assert data[128 * SECTOR:256 * SECTOR] == bytes(65536)             # discarded


@pytest.mark.skipif(not storage.qemu_storage_daemon(), reason="needs qemu-storage-daemon")
def test_bad_qcow2_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not a qcow2 image" * 100)
    spec = parse_disk_spec(f"format=qcow2,vdev=xvdb,access=w,target={bad}")
    with pytest.raises(XenPVError) as ei:
        storage.open_image(spec, str(tmp_path / "nbd"), "t", "domain 'x'")
    msg = str(ei.value)
    assert "\n" not in msg and "qcow2" in msg.lower(), msg
    RawImage(str(bad), False).close()                   # the lock was released
