"""The shared-page transport against a fake guest writing into a bytearray:
wrap-around, messages split across the wrap and larger than the ring,
back-pressure, hostile indices, reconnection."""

import mmap
import random
import struct

import pytest

from qemu_xenpv.xenstore import RingConnection, XenStore, XsType
from qemu_xenpv.xenstore.wire import (
    XENSTORE_CONNECTED, XENSTORE_ERROR_PROTO, XENSTORE_ERROR_RINGIDX,
    XENSTORE_RECONNECT,
)

T = XsType
RING = 1024
REQ, RSP = 0, 1024
REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD = 2048, 2052, 2056, 2060
FEATURES, CONNECTION, ERROR = 2064, 2068, 2072


class FakeGuest:
    """The guest side of xenstore_domain_interface, written from the spec."""

    def __init__(self, page, start_req=0, start_rsp=0):
        self.page = page
        self.set(REQ_CONS, start_req)
        self.set(REQ_PROD, start_req)
        self.set(RSP_CONS, start_rsp)
        self.set(RSP_PROD, start_rsp)
        self.outgoing = b""
        self.incoming = b""
        self.req_id = 0

    def get(self, off):
        return struct.unpack_from("<I", self.page, off)[0]

    def set(self, off, value):
        struct.pack_into("<I", self.page, off, value & 0xFFFFFFFF)

    def send(self, msg_type, payload, tx=0, req_id=None):
        """Queue a request and push as much as the ring takes.  Returns req_id."""
        if req_id is None:
            self.req_id += 1
            req_id = self.req_id
        self.outgoing += struct.pack("<IIII", msg_type, req_id, tx, len(payload)) + payload
        self.push()
        return req_id

    def push(self):
        cons, prod = self.get(REQ_CONS), self.get(REQ_PROD)
        space = RING - ((prod - cons) & 0xFFFFFFFF)
        data, self.outgoing = self.outgoing[:space], self.outgoing[space:]
        for i, byte in enumerate(data):
            self.page[REQ + ((prod + i) & (RING - 1))] = byte
        self.set(REQ_PROD, prod + len(data))
        return len(data)

    def pull(self):
        """Consume every byte in rsp[]; return the complete messages seen."""
        cons, prod = self.get(RSP_CONS), self.get(RSP_PROD)
        avail = (prod - cons) & 0xFFFFFFFF
        assert avail <= RING
        self.incoming += bytes(self.page[RSP + ((cons + i) & (RING - 1))] for i in range(avail))
        self.set(RSP_CONS, cons + avail)
        msgs = []
        while len(self.incoming) >= 16:
            msg_type, req_id, tx, length = struct.unpack_from("<IIII", self.incoming)
            if len(self.incoming) < 16 + length:
                break
            msgs.append((msg_type, req_id, tx, self.incoming[16:16 + length]))
            self.incoming = self.incoming[16 + length:]
        return msgs


@pytest.fixture
def store():
    s = XenStore()
    s.mkdir("/local/domain/1")
    s.set_perms("/local/domain/1", ["n1"])
    return s


class Setup:
    def __init__(self, store, start_req=0, start_rsp=0, page=None, **kw):
        self.page = bytearray(4096) if page is None else page
        self.guest = FakeGuest(self.page, start_req, start_rsp)
        self.kicks = 0
        self.errors = []
        self.conn = store.connect(1)
        self.ring = RingConnection(store, self.conn, self.page, self.kick,
                                   on_error=lambda r, code, why: self.errors.append(code), **kw)

    def kick(self):
        self.kicks += 1

    def roundtrip(self, msg_type, payload, tx=0):
        req_id = self.guest.send(msg_type, payload, tx)
        self.ring.process()
        msgs = self.guest.pull()
        assert len(msgs) == 1, msgs
        assert msgs[0][1] == req_id
        return msgs[0]

    def watch(self, path, token):
        req_id = self.guest.send(T.WATCH, path + b"\0" + token + b"\0")
        self.ring.process()
        assert self.guest.pull() == [(T.WATCH, req_id, 0, b"OK\0"),
                                     (T.WATCH_EVENT, 0, 0, path + b"\0" + token + b"\0")]


def test_basic_request_and_reply(store):
    s = Setup(store)
    assert struct.unpack_from("<I", s.page, FEATURES)[0] == 15
    assert s.roundtrip(T.WRITE, b"name\0guest") == (T.WRITE, 1, 0, b"OK\0")
    assert s.kicks == 1
    assert s.roundtrip(T.READ, b"name\0") == (T.READ, 2, 0, b"guest")
    assert s.roundtrip(T.READ, b"/tool\0") == (T.ERROR, 3, 0, b"EACCES\0")
    assert store.read("/local/domain/1/name") == b"guest"
    assert s.ring.process() is False                 # nothing to do: no kick
    assert s.kicks == 3


def test_several_requests_in_one_kick(store):
    s = Setup(store)
    for i in range(5):
        s.guest.send(T.WRITE, b"k%d\0v%d" % (i, i))
    s.ring.process()
    msgs = s.guest.pull()
    assert [(m[0], m[1]) for m in msgs] == [(T.WRITE, i) for i in range(1, 6)]
    assert s.kicks == 1


@pytest.mark.parametrize("start", [0, 1000, 0xFFFFFF00, 0xFFFFFFF9])
def test_wrap_around_of_ring_and_index(store, start):
    s = Setup(store, start_req=start, start_rsp=start + 7)
    for i in range(300):               # ~ 20 KiB each way: many wraps, across 2**32
        value = b"v%d-" % i + b"x" * (i % 37)
        assert s.roundtrip(T.WRITE, b"key\0" + value)[3] == b"OK\0"
        assert s.roundtrip(T.READ, b"key\0")[3] == value
    assert s.guest.get(REQ_CONS) == s.guest.get(REQ_PROD)
    assert s.guest.get(RSP_CONS) == s.guest.get(RSP_PROD)


def test_header_split_across_the_wrap(store):
    s = Setup(store, start_req=1020, start_rsp=1019)   # 4 header bytes before the end
    assert s.roundtrip(T.WRITE, b"k\0v")[3] == b"OK\0"
    assert s.roundtrip(T.READ, b"k\0")[3] == b"v"


def test_request_delivered_one_byte_at_a_time(store):
    s = Setup(store)
    data = struct.pack("<IIII", T.WRITE, 77, 0, 5) + b"a\0xyz"
    for byte in data[:-1]:
        s.page[REQ + s.guest.get(REQ_PROD) % RING] = byte
        s.guest.set(REQ_PROD, s.guest.get(REQ_PROD) + 1)
        s.ring.process()
        assert s.guest.pull() == []
    s.page[REQ + s.guest.get(REQ_PROD) % RING] = data[-1]
    s.guest.set(REQ_PROD, s.guest.get(REQ_PROD) + 1)
    s.ring.process()
    assert s.guest.pull() == [(T.WRITE, 77, 0, b"OK\0")]
    assert store.read("/local/domain/1/a") == b"xyz"


def test_request_larger_than_the_ring(store):
    store.set_quota("node-size", 0)
    s = Setup(store, start_req=900)
    value = bytes(range(256)) * 15 + b"z" * 236        # 4076 bytes: a full payload
    s.guest.send(T.WRITE, b"big\0" + value)
    assert s.guest.outgoing                            # did not fit at once
    while s.guest.outgoing or not s.guest.incoming:
        s.ring.process()
        s.guest.push()
        msgs = s.guest.pull()
        if msgs:
            assert msgs == [(T.WRITE, 1, 0, b"OK\0")]
            break
    assert store.read("/local/domain/1/big") == value


def test_reply_larger_than_the_ring(store):
    s = Setup(store, start_rsp=1000)
    value = b"y" * 2040
    store.write("/local/domain/1/big", value)
    s.guest.send(T.READ, b"big\0")
    s.ring.process()
    assert s.guest.pull() == []                        # first 1024 bytes only
    assert s.conn.pending() == 0                       # the rest is being written
    msgs = []
    for _ in range(5):
        s.ring.process()                               # guest read: room again
        msgs += s.guest.pull()
    assert msgs == [(T.READ, 1, 0, value)]


def test_full_response_ring_back_pressure_loses_nothing(store):
    s = Setup(store, max_pending=8)
    for i in range(40):
        store.write("/local/domain/1/k%d" % i, b"%d" % i + b"." * 100)
    ids = [s.guest.send(T.READ, b"k%d\0" % i) for i in range(40)]
    s.ring.process()
    # The response ring filled up; the guest did not read, so we stopped
    # taking requests once 8 replies were waiting, and left the rest in req[].
    assert (s.guest.get(RSP_PROD) - s.guest.get(RSP_CONS)) & 0xFFFFFFFF == RING
    assert s.conn.pending() + 1 == 8                  # + the one half written
    unread = (s.guest.get(REQ_PROD) - s.guest.get(REQ_CONS)) & 0xFFFFFFFF
    assert unread > 0 or s.guest.outgoing
    assert s.ring.process() is False                   # still full: nothing moves
    got = []
    for _ in range(100):
        got += s.guest.pull()
        s.guest.push()
        s.ring.process()
        if len(got) == 40:
            break
    assert [m[1] for m in got] == ids
    assert [m[3] for m in got] == [b"%d" % i + b"." * 100 for i in range(40)]


def test_request_budget_per_process_call(store):
    s = Setup(store, max_requests=3)
    for i in range(7):
        s.guest.send(T.WRITE, b"k%d\0" % i)
    assert s.ring.process() and s.ring.more_to_do
    assert len(s.guest.pull()) == 3
    s.ring.process()
    assert s.ring.more_to_do and len(s.guest.pull()) == 3
    s.ring.process()
    assert not s.ring.more_to_do and len(s.guest.pull()) == 1


def test_watch_events_from_other_writers_are_flushed(store):
    s = Setup(store)
    s.watch(b"dev", b"tok")
    kicks = s.kicks
    store.write("/local/domain/1/dev/state", "4")       # dom0 writes: no guest kick
    assert s.kicks == kicks + 1
    assert s.guest.pull() == [(T.WATCH_EVENT, 0, 0, b"dev/state\0tok\0")]


def test_events_wait_for_space_when_ring_is_full(store):
    s = Setup(store)
    s.watch(b"dev", b"tok")
    for i in range(100):                                  # ~2 KiB of events
        store.write("/local/domain/1/dev/n%03d" % i, "")
    first = s.guest.pull()
    assert 0 < len(first) < 100
    rest = []
    while len(first) + len(rest) < 100:
        s.ring.process()
        rest += s.guest.pull()
    assert [m[3] for m in first + rest] == [b"dev/n%03d\0tok\0" % i for i in range(100)]


def test_request_index_too_far_apart_breaks_the_ring(store):
    s = Setup(store)
    s.guest.set(REQ_PROD, 2000)                         # 2000 bytes "available"
    assert s.ring.process() is False
    assert s.ring.broken and s.errors == [XENSTORE_ERROR_RINGIDX]
    assert s.guest.get(ERROR) == XENSTORE_ERROR_RINGIDX
    assert s.kicks == 1
    s.guest.set(REQ_PROD, 0)
    s.guest.send(T.READ, b"x\0")
    assert s.ring.process() is False                    # stays broken
    assert s.guest.pull() == []


def test_response_index_corruption_breaks_the_ring(store):
    s = Setup(store)
    s.guest.set(RSP_CONS, 5000)                         # consumer ahead of producer
    s.guest.send(T.READ, b"x\0")
    s.ring.process()
    assert s.ring.broken and s.guest.get(ERROR) == XENSTORE_ERROR_RINGIDX


def test_oversized_header_is_a_protocol_error(store):
    s = Setup(store)
    s.guest.outgoing = struct.pack("<IIII", T.WRITE, 1, 0, 4097)
    s.guest.push()
    s.ring.process()
    assert s.ring.broken and s.errors == [XENSTORE_ERROR_PROTO]
    assert s.guest.get(ERROR) == XENSTORE_ERROR_PROTO


def test_broken_ring_drops_watches_and_transactions(store):
    s = Setup(store)
    s.watch(b"x", b"t")
    s.guest.set(REQ_PROD, s.guest.get(REQ_CONS) + 5000)
    s.ring.process()
    assert s.conn.watches == [] and s.conn.transactions == {}


def test_reconnect(store):
    s = Setup(store, start_req=50, start_rsp=60)
    s.watch(b"x", b"t")
    s.guest.set(REQ_PROD, 5000)                         # break it first
    s.ring.process()
    assert s.ring.broken
    s.guest.set(CONNECTION, XENSTORE_RECONNECT)
    kicks = s.kicks
    s.ring.process()
    assert s.guest.get(CONNECTION) == XENSTORE_CONNECTED
    assert s.guest.get(ERROR) == 0 and not s.ring.broken
    assert [s.guest.get(o) for o in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD)] == [0] * 4
    assert s.kicks == kicks + 1
    assert s.conn.watches == []
    s.guest.outgoing = s.guest.incoming = b""
    assert s.roundtrip(T.WRITE, b"after\0ok")[3] == b"OK\0"


def test_reintroduce_resets_the_ring(store):
    s = Setup(store, start_req=50, start_rsp=60)
    store.introduce_domain(1, 1, 1)
    s.watch(b"x", b"t")
    s.guest.send(T.READ, b"x\0")                        # in flight, never answered
    kicks = s.kicks
    store.introduce_domain(1, 1, 1)
    assert [s.guest.get(o) for o in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD)] == [0] * 4
    assert s.kicks == kicks + 1
    assert s.conn.watches == []


def test_release_closes_the_ring(store):
    s = Setup(store)
    store.introduce_domain(1, 1, 1)
    s.guest.send(T.READ, b"x\0")
    store.release_domain(1)
    assert s.ring.process() is False
    assert s.guest.pull() == []


def test_random_garbage_never_raises(store):
    rng = random.Random(1234)
    for _round in range(200):
        s = Setup(store)
        for off in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
            if rng.random() < 0.3:
                s.guest.set(off, rng.getrandbits(32))
        if rng.random() < 0.5:
            s.guest.set(REQ_PROD, s.guest.get(REQ_CONS) + rng.randrange(0, 1025))
            for i in range(RING):
                s.page[REQ + i] = rng.getrandbits(8)
        for _ in range(3):
            s.ring.process()                    # must terminate and not raise
            cons, prod = s.guest.get(RSP_CONS), s.guest.get(RSP_PROD)
            if (prod - cons) & 0xFFFFFFFF <= RING:
                s.guest.set(RSP_CONS, prod)     # play along: consume replies
        s.ring.close()
    assert store.read("/tool") == b""            # the store is still fine


def test_page_must_be_one_writable_page(store):
    conn = store.connect(1)
    with pytest.raises(ValueError):
        RingConnection(store, conn, bytearray(2080), lambda: None)
    with pytest.raises(ValueError):
        RingConnection(store, conn, bytes(4096), lambda: None)


def test_works_on_a_slice_of_an_mmap(store):
    mm = mmap.mmap(-1, 3 * 4096)
    try:
        view = memoryview(mm)[4096:8192]
        s = Setup(store, page=view)
        assert s.roundtrip(T.WRITE, b"m\0mapped")[3] == b"OK\0"
        assert mm[4096 + 16:4096 + 17] == b"m"          # really in the mapping
        s.ring.close()
        del s
        view.release()
    finally:
        mm.close()


def test_failing_notify_is_logged(store, caplog):
    s = Setup(store)

    def bad_notify():
        raise OSError("evtchn gone")
    s.ring._notify = bad_notify
    s.guest.send(T.READ, b"x\0")
    s.ring.process()                                     # does not raise
    assert "notify failed" in caplog.text


def test_reconnect_is_ignored_when_not_advertised(store):
    store.set_features(3, 2)                             # ERROR only
    page = bytearray(4096)
    guest = FakeGuest(page, 40, 40)
    ring = RingConnection(store, store.connect(3), page, lambda: None)
    assert guest.get(FEATURES) == 2
    guest.set(CONNECTION, XENSTORE_RECONNECT)
    ring.process()
    assert guest.get(CONNECTION) == XENSTORE_RECONNECT
    assert guest.get(REQ_CONS) == 40
