"""The shared split-driver mechanism (devices/xenbus.py) with a toy back
end on the real XenStore, grant engine and event channels: the
directories and permissions libxl writes, the XenbusState machine (connect,
close, reconnect, refuse), single- and multi-page rings, index garbage,
hot unplug and destruction; and the io/ring.h arithmetic on its own."""

from __future__ import annotations

import asyncio
import struct

import pytest

from qemu_xenpv import abi
from qemu_xenpv.devices import xenbus
from qemu_xenpv.devices.xenbus import (BackendDevice, BackRing, DeviceSet, Pages, RingError,
                                       XenbusError, XenbusState as S, parse_uint, ring_size)

from pvworld import FakeDomain, FakeHV, FrontRing, wait_for

REQ = struct.Struct("<II")          # toy request: id, value
RSP = struct.Struct("<II")          # toy response: id, value + 1


class Echo(BackendDevice):
    """A toy back end: answers each request (id, v) with (id, v + 1)."""

    kind = "vtest"

    def __init__(self, dom, devid):
        super().__init__(dom, devid)
        self.ring = None
        self.released = False
        self.disconnects = 0

    def backend_entries(self):
        return {"params": "toy"}

    def frontend_entries(self):
        return {"virtual-device": self.devid}

    def features(self):
        return {"feature-echo": 1, "max-ring-page-order": 2}

    def connect(self, fe):
        refs = self.ring_refs(fe, max_order=2)
        port = fe.read_int("event-channel", limit=1023)
        if port is None:
            raise XenbusError("no event-channel")
        self.ring = BackRing(self.map_ring(refs), REQ.size, RSP.size)
        w = self.workers[0] if self.workers else self.add_worker("echo", self.process)
        self.bind_evtchn(port, w.kick)
        w.kick()
        return {"echo-ready": 1}

    def disconnect(self):
        self.ring = None
        self.disconnects += 1

    def release(self):
        self.released = True

    def process(self):
        conn, ring = self.connection, self.ring
        if ring is None:
            return False
        try:
            n = ring.unconsumed()
        except RingError as e:
            self.fail(f"ring garbage: {e}")
            return False
        if not n:
            return ring.final_check()
        for _ in range(n):
            rid, v = REQ.unpack(ring.take_request())
            ring.put_response(RSP.pack(rid, v + 1))
        if ring.push_responses():
            self.notify(conn)
        return True


@pytest.fixture
def hv():
    return FakeHV()


@pytest.fixture
def dom(hv, make_ram):
    d = FakeDomain(hv, 3, make_ram(4 << 20), name="three")
    d.devices = DeviceSet(d)
    yield d
    asyncio.run(d.devices.shutdown())
    d.destroy()


def read(hv, path):
    return hv.xenstore.read(path)


def perms(hv, path):
    return [str(p) for p in hv.xenstore.store.get_perms(path)]


class Front:
    """The guest's frontend, done by hand."""

    def __init__(self, dom, dev, pages=1):
        self.dom, self.dev, self.hv = dom, dev, dom.hv
        self.mfns = [dom.alloc_page() for _ in range(pages)]
        self.refs = [dom.grant(m) for m in self.mfns]
        self.port = dom.evtchn.alloc_unbound(0)
        self.ring = FrontRing(dom, self.mfns, REQ.size, RSP.size)

    def write(self, key, value):
        self.hv.xenstore.write(f"{self.dev.fe_path}/{key}", str(value))

    def publish(self, state=S.Initialised, order=None, protocol="x86_32-abi"):
        if order is None:
            self.write("ring-ref", self.refs[0])
        else:
            self.write("ring-page-order", order)
            for i, r in enumerate(self.refs):
                self.write(f"ring-ref{i}", r)
        self.write("event-channel", self.port)
        if protocol is not None:
            self.write("protocol", protocol)
        self.write("state", int(state))

    def echo(self, rid, v):
        self.ring.put(REQ.pack(rid, v))
        self.ring.push()
        self.dom.evtchn.send(self.port)
        return RSP.unpack(self.ring.responses(RSP.size)[0])


def make(dom, devid=7):
    dev = Echo(dom, devid)
    dom.devices.add(dev)
    return dev


# ---- helpers ----------------------------------------------------------------------
def test_parse_uint():
    assert parse_uint(b"42") == 42 and parse_uint(b" 7 ") == 7
    for bad in (None, b"", b"-1", b"0x10", b"1e3", b"12abc", b"99999999999999999999999"):
        assert parse_uint(bad) is None
    assert parse_uint(b"300", limit=255) is None


@pytest.mark.parametrize("pages,entry,n", [(1, 108, 32), (2, 108, 64), (16, 108, 512),
                                           (1, 12, 256), (1, 8, 256), (1, 4096, 0)])
def test_ring_size(pages, entry, n):
    assert ring_size(4096 * pages, entry) == n


def test_back_ring_arithmetic_and_garbage(make_ram):
    ram = make_ram(2 << 20)
    view = ram.view(0x1000, 4096)
    try:
        ring = BackRing(Pages([view]), 108, 12)
        assert ring.nr_ents == 32
        ram.w32(0x1000, 5)                          # req_prod
        assert ring.unconsumed() == 5
        for _ in range(5):
            ring.take_request()
        assert ring.unconsumed() == 0
        assert not ring.final_check()
        assert ram.r32(0x1004) == 6                 # req_event = req_cons + 1
        ram.w32(0x100C, 1)                          # rsp_event
        for _ in range(5):
            ring.put_response(b"x" * 12)
        assert ring.push_responses() and ram.r32(0x1008) == 5
        ram.w32(0x1000, 6)
        ring.take_request()
        ram.w32(0x100C, 100)                        # frontend not waiting: no notify
        ring.put_response(b"y" * 12)
        assert not ring.push_responses()
        ram.w32(0x1000, 0xFFFFFFFF)                 # garbage (behind us, modulo 2^32)
        with pytest.raises(RingError):
            ring.unconsumed()
        ram.w32(0x1000, 6 + 32)                     # exactly a ring ahead of responses: fine
        assert ring.unconsumed() == 32
        ram.w32(0x1000, 6 + 33)                     # one more: garbage
        with pytest.raises(RingError):
            ring.unconsumed()
        # free-running indices wrap at 2^32
        ram.w32(0x1008, 0xFFFFFFF0)
        ring = BackRing(Pages([view]), 108, 12)
        ram.w32(0x1000, 0x10)                       # 32 requests across the wrap
        assert ring.unconsumed() == 32
        for _ in range(32):
            ring.take_request()
            ring.put_response(b"z" * 12)
        ring.push_responses()
        assert ram.r32(0x1008) == 0x10
    finally:
        ring = None
        view.release()


def test_pages_straddle(make_ram):
    ram = make_ram(2 << 20)
    p = Pages([ram.view(0x5000, 4096), ram.view(0x2000, 4096)])     # not contiguous
    p.write(4090, bytes(range(12)))
    assert ram.read(0x5000 + 4090, 6) == bytes(range(6))
    assert ram.read(0x2000, 6) == bytes(range(6, 12))
    assert p.read(4090, 12) == bytes(range(12))


# ---- creation -----------------------------------------------------------------------
def test_create_writes_libxl_tree(hv, dom):
    dev = make(dom)
    be = "/local/domain/0/backend/vtest/3/7"
    fe = "/local/domain/3/device/vtest/7"
    assert (dev.be_path, dev.fe_path) == (be, fe)
    assert read(hv, f"{be}/frontend") == fe.encode()
    assert read(hv, f"{be}/frontend-id") == b"3"
    assert read(hv, f"{be}/online") == b"1"
    assert read(hv, f"{be}/params") == b"toy"
    assert read(hv, f"{be}/feature-echo") == b"1"
    assert read(hv, f"{be}/state") == b"2"                   # InitWait
    assert read(hv, f"{fe}/backend") == be.encode()
    assert read(hv, f"{fe}/backend-id") == b"0"
    assert read(hv, f"{fe}/state") == b"1"
    assert read(hv, f"{fe}/virtual-device") == b"7"
    assert perms(hv, be) == ["n0", "r3"]
    assert perms(hv, f"{be}/state") == ["n0", "r3"]
    assert perms(hv, fe) == ["n3", "r0"]
    assert perms(hv, f"{fe}/state") == ["n3", "r0"]


def test_connect_single_page(hv, dom):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish()
    assert dev.state == S.Connected
    assert read(hv, f"{dev.be_path}/state") == b"4"
    assert read(hv, f"{dev.be_path}/echo-ready") == b"1"
    assert dom.grant_flags(f.refs[0]) & (abi.GTF_reading | abi.GTF_writing)
    assert f.echo(1, 41) == (1, 42)
    assert f.echo(2, 99) == (2, 100)
    assert any("connected" in l for l in hv.lines)


def test_connect_multi_page_ring(hv, dom):
    dev = make(dom)
    f = Front(dom, dev, pages=4)
    f.publish(order=2)
    assert dev.state == S.Connected
    assert dev.ring.nr_ents == 1024
    for i in range(2100):                       # round the ring twice
        f.ring.put(REQ.pack(i, i))
        if i % 100 == 99:
            f.ring.push()
            dom.evtchn.send(f.port)
            assert [RSP.unpack(r) for r in f.ring.responses(RSP.size, want=100)] == \
                [(j, j + 1) for j in range(i - 99, i + 1)]


def test_mini_os_writes_connected_directly(hv, dom):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish(state=S.Connected, protocol=None)              # no protocol key: native
    assert dev.state == S.Connected
    assert f.echo(5, 5) == (5, 6)


@pytest.mark.parametrize("break_it,needle", [
    (lambda f: f.write("ring-ref", "12abc"), "not a number"),
    (lambda f: f.write("ring-ref", 4000), "cannot map ring grant"),
    (lambda f: f.write("event-channel", 2000), "event-channel"),
    (lambda f: f.write("event-channel", 1), "cannot bind event channel"),     # store port
    (lambda f: f.write("protocol", "x86_64-abi"), "protocol 'x86_64-abi' is not supported"),
    (lambda f: f.write("ring-page-order", 3), "max-ring-page-order"),
])
def test_refused_frontend(hv, dom, break_it, needle):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish(state=S.InitWait)                 # not yet: keys first
    break_it(f)
    f.write("state", int(S.Initialised))
    assert dev.state == S.Closing
    err = read(hv, f"{dev.be_path}/error").decode()
    assert needle in err
    assert not dev.ring_maps and dev.port == 0
    assert not dom.grant_flags(f.refs[0]) & (abi.GTF_reading | abi.GTF_writing)


def test_close_and_reconnect(hv, dom):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish()
    assert f.echo(1, 1) == (1, 2)
    f.write("state", int(S.Closing))
    assert dev.state == S.Closing
    f.write("state", int(S.Closed))
    assert dev.state == S.Closed and dev.disconnects == 1
    assert not dom.grant_flags(f.refs[0]) & (abi.GTF_reading | abi.GTF_writing)
    assert dom.evtchn.ports[f.port].state == 2              # our end unbound again
    # Mini-OS's shutdown_blkfront: Initialising -> back end InitWait -> connect again
    f.write("state", int(S.Initialising))
    assert dev.state == S.InitWait
    f2 = Front(dom, dev)
    f2.publish()
    assert dev.state == S.Connected
    assert f2.echo(9, 9) == (9, 10)


def test_frontend_directory_removed(hv, dom):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish()
    hv.xenstore.store.rm(f"{dev.fe_path}/state")
    assert dev.state == S.Closed and dev.port == 0


def test_ring_garbage_disconnects_only_that_device(hv, dom):
    bad, good = make(dom, 7), make(dom, 8)
    fb, fg = Front(dom, bad), Front(dom, good)
    fb.publish()
    fg.publish()
    fb.ring.push(prod=1000)                     # req_prod far beyond the ring
    dom.evtchn.send(fb.port)
    wait_for(lambda: bad.state == S.Closing, what="the bad device closing")
    assert "ring garbage" in read(hv, f"{bad.be_path}/error").decode()
    assert bad.port == 0 and not bad.ring_maps
    assert fg.echo(3, 30) == (3, 31)            # the other device is still served
    assert good.state == S.Connected


def test_remove_waits_for_the_frontend(hv, dom):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish()

    async def unplug():
        task = asyncio.ensure_future(dom.devices.remove("vtest", 7))
        await asyncio.sleep(0.05)
        assert read(hv, f"{dev.be_path}/online") == b"0"
        assert dev.state == S.Closing           # the frontend is asked to close
        f.write("state", int(S.Closing))
        f.write("state", int(S.Closed))
        return await task

    assert asyncio.run(unplug()) is True
    assert read(hv, dev.be_path) is None and read(hv, dev.fe_path) is None
    assert dev.released and not dev.workers
    assert dom.devices.get("vtest", 7) is None


def test_remove_forced_after_timeout(hv, dom):
    dev = make(dom)
    Front(dom, dev).publish()
    assert asyncio.run(dev.remove(timeout=0.1)) is False
    assert read(hv, dev.be_path) is None and dev.released
    assert any("did not close" in l for l in hv.lines)


def test_destroy_releases_everything(hv, dom):
    dev = make(dom)
    f = Front(dom, dev)
    f.publish()
    asyncio.run(dom.devices.shutdown())
    assert dev.released and dev.port == 0 and not dev.ring_maps
    assert read(hv, dev.be_path) is None
    assert not dom.grant_flags(f.refs[0]) & (abi.GTF_reading | abi.GTF_writing)
    assert not hv.grants.mappings()


def test_register_backend_and_create_configured(hv, dom):
    made = []

    def factory(d):
        made.append(Echo(d, 11))
        return made

    xenbus.register_backend("vtest", factory)
    try:
        dom.devices.create_configured()
        assert dom.devices.get("vtest", 11) is made[0]
        assert made[0].state == S.InitWait
    finally:
        xenbus._FACTORIES.pop("vtest", None)


def test_create_configured_undoes_on_failure(hv, dom):
    ok = []

    def factory(d):
        ok.append(Echo(d, 12))
        raise RuntimeError("image locked")

    def first(d):
        ok.append(Echo(d, 13))
        return [ok[-1]]

    xenbus.register_backend("vtest-a", first)
    xenbus.register_backend("vtest-b", factory)
    try:
        with pytest.raises(RuntimeError):
            dom.devices.create_configured()
        assert not dom.devices.devices
        assert ok[0].released and read(hv, ok[0].be_path) is None
    finally:
        xenbus._FACTORIES.pop("vtest-a", None)
        xenbus._FACTORIES.pop("vtest-b", None)


def test_configured_devices_are_created_in_libxl_order(hv, dom, monkeypatch):
    """libxl adds disks before nics (device_type_tbl), and xenstored lists
    children in creation order: Mini-OS's xenbus test prints device/vbd
    before device/vif under Xen, whatever order our back ends registered in."""
    from qemu_xenpv.devices import load_backends
    load_backends()                         # the real ones are registered first...

    class Vif(Echo):
        kind = "vif"

    class Vbd(Echo):
        kind = "vbd"

    calls = []

    def factory(cls):
        def make_them(d):
            calls.append(cls.kind)
            return [cls(d, 0)]
        return make_them

    # ...and then replaced, nics registered before disks
    monkeypatch.setattr(xenbus, "_FACTORIES", {"vtest": factory(Echo), "vif": factory(Vif),
                                               "vbd": factory(Vbd)})
    dom.devices.create_configured()
    assert calls == ["vbd", "vif", "vtest"]
    kids = hv.xenstore.store.directory(f"/local/domain/{dom.domid}/device")
    assert [k for k in kids if k in ("vbd", "vif", "vtest")] == ["vbd", "vif", "vtest"]


def test_destroy_during_a_hot_unplug(hv, dom):
    dev = make(dom)
    Front(dom, dev).publish()

    async def race():
        task = asyncio.ensure_future(dom.devices.remove("vtest", 7))
        await asyncio.sleep(0.05)
        assert dom.devices.get("vtest", 7) is dev       # still there while it goes
        with pytest.raises(KeyError):
            await dom.devices.remove("vtest", 7)         # only one removal at a time
        await dom.devices.shutdown()                     # the domain is destroyed
        assert dev.released and dev.port == 0 and not dev.ring_maps
        return await asyncio.wait_for(task, 2)

    asyncio.run(race())
    assert read(hv, dev.be_path) is None and not hv.grants.mappings()
