"""Domain 0's xenstored (qemu_xenpv.xenstored) wired to fake domains whose
ring page and shared_info live in real GuestRAM and whose event channels
are the real ones: the tree xl writes (with xl's permissions), INTRODUCE
binding the store port and serving the ring, RELEASE and @releaseDomain,
re-introduction, a broken ring, Python watches, the Unix socket and the
xs_wire client the CLI uses."""

from __future__ import annotations

import asyncio
import struct
import threading
import uuid
from types import SimpleNamespace

import pytest

from qemu_xenpv import abi
from qemu_xenpv.evtchn import ECS_FREE, ECS_INTERDOMAIN, ECS_UNBOUND, EventChannels
from qemu_xenpv.hypervisor import Dom0
from qemu_xenpv.vcpu import VCPU
from qemu_xenpv.xenstore import XenStoreError, XsType
from qemu_xenpv.xenstore.client import XsClient
from qemu_xenpv.xenstored import XenStored

SI_PA, STORE_MFN = 0x1000, 0x5
REQ, RSP, REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD = 0, 1024, 2048, 2052, 2056, 2060
ERROR = 2072


class FakeHV:
    def __init__(self):
        self.lock = threading.RLock()
        self.domains = {}
        self.dom0 = Dom0(self)
        self.soon = []
        self.lines = []
        self.xenstore = XenStored(self)

    def domain_by_id(self, domid):
        return self.dom0 if domid == 0 else self.domains.get(domid)

    def call_soon(self, fn, *args):
        self.soon.append((fn, args))

    def on_loop_thread(self):
        return True                     # the test thread plays the event loop

    def run_soon(self):
        n = 0
        while self.soon:
            todo, self.soon = self.soon, []
            for fn, args in todo:
                fn(*args)
                n += 1
        return n

    def dmesg(self, line):
        self.lines.append(line)


class FakeDomain:
    def __init__(self, hv, domid, ram, name="guest"):
        self.hv, self.domid, self.ram, self.name = hv, domid, ram, name
        self.uuid = uuid.uuid4()
        self.shared_info_pa = SI_PA
        self.config = SimpleNamespace(memory=32, maxmem=0)
        self.built = SimpleNamespace(store_mfn=STORE_MFN)
        self.store_evtchn = 1
        self.console = None
        self.kicks = []
        self.mmu = SimpleNamespace(owns=lambda mfn: 2 <= mfn < 0x100)
        self.vcpus = [VCPU(self, 0, SimpleNamespace(estack=0x10000, priv=0x11000))]
        self.evtchn = EventChannels(hv, self)
        assert self.evtchn.alloc_unbound(0) == 1
        hv.domains[domid] = self

    def kick(self, vid):
        self.kicks.append(vid)

    def on_virq_bound(self, *a):
        pass

    # the guest's side of its ring
    def put(self, off, v):
        self.ram.w32((STORE_MFN << 12) + off, v)

    def get(self, off):
        return self.ram.r32((STORE_MFN << 12) + off)

    def request(self, msg_type, payload, req_id=1, tx=0, kick=True):
        base = STORE_MFN << 12
        msg = struct.pack("<IIII", msg_type, req_id, tx, len(payload)) + payload
        prod = self.get(REQ_PROD)
        for i, b in enumerate(msg):
            self.ram.w8(base + REQ + ((prod + i) & 1023), b)
        self.put(REQ_PROD, prod + len(msg))
        if kick:
            self.evtchn.send(1)                  # kick domain 0 (served inline)

    def replies(self):
        base = STORE_MFN << 12
        cons, prod = self.get(RSP_CONS), self.get(RSP_PROD)
        data = bytes(self.ram.r8(base + RSP + ((cons + i) & 1023)) for i in range(prod - cons))
        self.put(RSP_CONS, prod)
        out = []
        while data:
            t, rid, tx, n = struct.unpack_from("<IIII", data)
            out.append((t, rid, data[16:16 + n]))
            data = data[16 + n:]
        return out

    def pending(self, port):
        return self.ram.test_bit(SI_PA + abi.SI_EVTCHN_PENDING, port)


@pytest.fixture
def hv():
    return FakeHV()


@pytest.fixture
def dom(hv, make_ram):
    d = FakeDomain(hv, 3, make_ram(2 << 20), name="three")
    hv.xenstore.domain_created(d)
    hv.run_soon()
    yield d
    hv.xenstore.domain_destroyed(d)             # lets go of the ring before the RAM goes


def test_domain_0_entries(hv):
    s = hv.xenstore.store
    assert s.read("/local/domain/0/name") == b"Domain-0"
    assert s.read("/local/domain/0/domid") == b"0"
    assert s.directory("/local/domain/0/backend") == []


def test_the_tree_xl_writes(hv, dom):
    s = hv.xenstore.store
    dp = "/local/domain/3"
    perms = lambda p: [str(x) for x in s.get_perms(p)]
    assert s.read(f"{dp}/name") == b"three" and s.read(f"{dp}/domid") == b"3"
    assert s.read(f"{dp}/vm") == f"/vm/{dom.uuid}".encode()
    assert s.read(f"/vm/{dom.uuid}/name") == b"three"
    assert s.read(f"{dp}/memory/target") == b"32768"
    assert s.read(f"{dp}/memory/static-max") == b"32768"
    assert s.read(f"{dp}/store/port") == b"1" and s.read(f"{dp}/store/ring-ref") == b"5"
    assert s.read(f"{dp}/cpu/0/availability") == b"online"
    assert s.read(f"{dp}/control/platform-feature-xs_reset_watches") == b"1"
    assert s.read(f"{dp}/control/platform-feature-multiprocessor-suspend") == b"1"
    # libxl (xend_suspend_evtchn_compat off): device/suspend/event-channel,
    # the guest's to write; its parent inherits device's permissions
    assert s.directory(f"{dp}/device") == ["suspend"]
    assert s.directory(f"{dp}/device/suspend") == ["event-channel"]
    assert s.read(f"{dp}/device/suspend/event-channel") == b""
    assert perms(f"{dp}/device") == ["n0", "r3"]
    assert perms(f"{dp}/device/suspend") == ["n0", "r3"]
    assert perms(f"{dp}/device/suspend/event-channel") == ["n3"]
    assert s.read("/libxl/3/type") == b"pv"
    assert perms(dp) == ["n0", "r3"] and perms(f"{dp}/name") == ["n0", "r3"]
    assert perms(f"{dp}/control") == ["n0", "r3"]
    for rw in ("control/shutdown", "control/sysrq", "control/feature-poweroff", "data",
               "drivers", "feature", "attr", "error"):
        assert perms(f"{dp}/{rw}") == ["n3"], rw
    assert perms("/libxl/3") == ["n0"]


def test_console_nodes_come_from_the_backend(hv, make_ram):
    from qemu_xenpv.devices.console import ConsoleBackend
    d = FakeDomain(hv, 4, make_ram(2 << 20))
    d.console = ConsoleBackend(d, 0x6, 2)
    hv.xenstore.domain_created(d)
    s = hv.xenstore.store
    assert s.read("/local/domain/4/console/ring-ref") == b"6"
    assert s.read("/local/domain/4/console/port") == b"2"
    assert s.read("/local/domain/4/console/type") == b"xenconsoled"
    assert [str(p) for p in s.get_perms("/local/domain/4/console/backend-id")] == ["n4", "r0"]
    assert s.read("/local/domain/0/backend/console/4/0/frontend") == b"/local/domain/4/console"
    hv.xenstore.domain_destroyed(d)
    assert s.directory("/local/domain/0/backend/console") == []


def test_introduce_binds_the_store_port_and_serves_the_ring(hv, dom):
    ch = dom.evtchn.ports[1]
    assert ch.state == ECS_INTERDOMAIN and ch.remote_dom == 0
    assert hv.dom0.evtchn.ports[ch.remote_port].consumer is not None
    assert hv.xenstore.store.is_domain_introduced(3)
    dom.request(XsType.READ, b"domid\0", req_id=7)
    # served inline, in the sender's thread: the reply is there at once
    assert dom.replies() == [(XsType.READ, 7, b"3")]
    assert dom.pending(1)                        # domain 0 kicked the guest back
    dom.request(XsType.WRITE, b"/local/domain/0/x\0v", req_id=8)
    hv.run_soon()
    assert dom.replies() == [(XsType.ERROR, 8, b"EACCES\0")]


def test_watch_event_reaches_the_guest_ring(hv, dom):
    dom.request(XsType.WATCH, b"data/k\0tok\0", req_id=1)
    hv.run_soon()
    assert dom.replies() == [(XsType.WATCH, 1, b"OK\0"),
                             (XsType.WATCH_EVENT, 0, b"data/k\0tok\0")]
    hv.xenstore.write("/local/domain/3/data/k", "v")
    assert dom.replies() == [(XsType.WATCH_EVENT, 0, b"data/k\0tok\0")]


def test_fairness_a_flood_is_served_in_slices(hv, dom):
    for i in range(40):                         # 880 bytes: fits the 1 KiB ring
        dom.request(XsType.READ, b"domid\0", req_id=i, kick=False)
    ring = hv.xenstore.rings[3].ring
    ring._max_requests = 8
    hv.soon.clear()
    hv.xenstore._process(3)
    assert ring.more_to_do and hv.soon          # came back later, not in one go
    hv.run_soon()
    got = []
    while True:
        r = dom.replies()
        if not r:
            break
        got += r
        hv.xenstore._process(3)
        hv.run_soon()
    assert [rid for _t, rid, _p in got] == list(range(40))


def test_broken_ring_is_ignored_and_logged(hv, dom):
    dom.put(REQ_PROD, dom.get(REQ_CONS) + 5000)
    dom.evtchn.send(1)
    hv.run_soon()
    assert dom.get(ERROR) == 2
    assert any("xenstore: ring broken (error 2)" in l for l in hv.lines)


def test_release_on_destroy(hv, dom):
    events = []
    hv.xenstore.store.watch("@releaseDomain", "r", lambda p, t: events.append(p))
    dport = dom.evtchn.ports[1].remote_port
    hv.xenstore.domain_destroyed(dom)
    s = hv.xenstore.store
    assert events == ["@releaseDomain", "@releaseDomain"]
    assert not s.exists("/local/domain/3") and not s.exists(f"/vm/{dom.uuid}")
    assert not s.exists("/libxl/3")
    assert 3 not in hv.xenstore.rings
    assert hv.dom0.evtchn.ports[dport].state == ECS_FREE
    assert dom.evtchn.ports[1].state == ECS_UNBOUND
    hv.xenstore.domain_destroyed(dom)           # twice is harmless


def test_introduce_hook_checks(hv, dom, make_ram):
    s = hv.xenstore.store
    with pytest.raises(XenStoreError) as e:
        s.introduce_domain(9, STORE_MFN, 1)     # no such domain
    assert e.value.errno == "ENOENT"
    d = FakeDomain(hv, 5, make_ram(2 << 20))
    with pytest.raises(XenStoreError) as e:
        s.introduce_domain(5, 0x5000, 1)        # not its frame
    assert e.value.errno == "EINVAL"
    with pytest.raises(XenStoreError) as e:
        s.introduce_domain(5, STORE_MFN, 9)     # port 9 is not offered to dom0
    assert e.value.errno == "EINVAL"
    s.introduce_domain(5, STORE_MFN, 1)
    assert 5 in hv.xenstore.rings
    # re-introduction with the same ring resets it, keeps the binding
    before = hv.xenstore.rings[5]
    s.introduce_domain(5, STORE_MFN, 1)
    assert hv.xenstore.rings[5] is before
    hv.xenstore.domain_destroyed(d)


def test_wait_for_acknowledgement(hv, dom):
    loop = asyncio.new_event_loop()
    xs = hv.xenstore
    path = "/local/domain/3/control/shutdown"
    try:
        xs.write(path, "poweroff")
        assert loop.run_until_complete(xs.wait_for(path, lambda v: not v, 0.05)) is False

        async def ack_later():
            await asyncio.sleep(0.02)
            xs.write(path, "")
        loop.create_task(ack_later())
        assert loop.run_until_complete(xs.wait_for(path, lambda v: not v, 5)) is True
        assert not hv.xenstore.store.dom0.watches        # the watch is gone again
    finally:
        loop.close()


def test_socket_and_client(hv, dom, tmp_path):
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    path = tmp_path / "xenstored.sock"
    try:
        asyncio.run_coroutine_threadsafe(hv.xenstore.serve_socket(path), loop).result(5)
        with XsClient(path) as c:
            assert c.read("/local/domain/3/name") == b"three"
            c.write("/tool/x/y", "1")
            assert c.directory("/tool/x") == ["y"]
            assert c.get_perms("/local/domain/3") == ["n0", "r3"]
            c.set_perms("/tool/x", ["n0", "r3"])
            with pytest.raises(XenStoreError) as e:
                c.read("/nope")
            assert e.value.errno == "ENOENT"
            tx = c.transaction_start()
            c.write("/tool/x/y", "2", tx)
            hv_write = asyncio.run_coroutine_threadsafe(
                _write(hv, "/tool/x/y", "3"), loop).result(5)
            assert hv_write is None
            with pytest.raises(XenStoreError) as e:
                c.transaction_end(tx)
            assert e.value.errno == "EAGAIN"
            c.watch("/tool/x", "w")
            assert c.read_watch(5) == ("/tool/x", "w")
            asyncio.run_coroutine_threadsafe(_write(hv, "/tool/x/z", "4"), loop).result(5)
            assert c.read_watch(5) == ("/tool/x/z", "w")
            assert c.read_watch(0.05) is None
            lines = c.tree("/local/domain/3")
            assert 'name = "three"' in lines and ' target = "32768"' in lines
            assert hv.xenstore.clients == 1
        # an oversized message closes the connection, as xenstored does
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        s.sendall(struct.pack("<IIII", XsType.READ, 1, 0, 5000))
        s.settimeout(5)
        assert s.recv(100) == b""
        s.close()
        asyncio.run_coroutine_threadsafe(hv.xenstore.close_socket(), loop).result(5)
        assert not path.exists()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


async def _write(hv, path, value):
    hv.xenstore.write(path, value)
