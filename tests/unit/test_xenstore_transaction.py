"""Optimistic transactions: isolation, commit, abort, EAGAIN on conflict,
watch events at commit only, the dom0 context manager."""

import pytest

from qemu_xenpv.xenstore import XenStore, XenStoreError, XsType

T = XsType


class Client:
    def __init__(self, store, domid):
        self.store = store
        self.conn = store.connect(domid)
        self.req_id = 0

    def call(self, msg_type, *args, tx=0, raw=None):
        payload = raw if raw is not None else b"".join(a.encode() + b"\0" for a in args)
        self.req_id += 1
        reply = self.store.handle(self.conn, msg_type, self.req_id, tx, payload)
        assert reply.tx_id == tx
        return reply

    def start(self):
        reply = self.call(T.TRANSACTION_START, "")
        assert reply.type == T.TRANSACTION_START
        assert reply.payload.endswith(b"\0")
        return int(reply.payload[:-1])

    def end(self, tx, commit=True):
        reply = self.call(T.TRANSACTION_END, "T" if commit else "F", tx=tx)
        return reply.payload[:-1].decode() if reply.type == T.ERROR else "OK"

    def read(self, path, tx=0):
        reply = self.call(T.READ, path, tx=tx)
        return reply.payload if reply.type == T.READ else reply.payload[:-1].decode()

    def write(self, path, value, tx=0):
        reply = self.call(T.WRITE, raw=path.encode() + b"\0" + value, tx=tx)
        assert reply.type == T.WRITE, reply

    def events(self):
        return [m.payload for m in self.conn.take() if m.type == T.WATCH_EVENT]


@pytest.fixture
def store():
    s = XenStore()
    s.write("/a", "1")
    s.write("/b", "2")
    return s


@pytest.fixture
def c(store):
    return Client(store, 0)


@pytest.fixture
def other(store):
    return Client(store, 0)


def test_transaction_ids_are_distinct_nonzero_decimal(c):
    ids = [c.start() for _ in range(5)]
    assert 0 not in ids and len(set(ids)) == 5


def test_changes_are_invisible_until_commit(c, other):
    tx = c.start()
    c.write("/a", b"tx", tx=tx)
    c.write("/new/node", b"n", tx=tx)
    assert c.read("/a", tx=tx) == b"tx"
    assert c.read("/new/node", tx=tx) == b"n"
    assert other.read("/a") == b"1"
    assert other.read("/new/node") == "ENOENT"
    assert c.read("/a") == b"1"                         # outside the transaction
    assert c.end(tx) == "OK"
    assert other.read("/a") == b"tx"
    assert other.read("/new/node") == b"n"


def test_abort_discards(c, other):
    tx = c.start()
    c.write("/a", b"tx", tx=tx)
    reply = c.call(T.RM, "/b", tx=tx)
    assert reply.type == T.RM
    assert c.read("/b", tx=tx) == "ENOENT"
    assert c.end(tx, commit=False) == "OK"
    assert other.read("/a") == b"1"
    assert other.read("/b") == b"2"


def test_conflicting_write_gives_eagain(c, other, store):
    tx = c.start()
    assert c.read("/a", tx=tx) == b"1"
    c.write("/b", b"from-tx", tx=tx)
    other.write("/a", b"changed")
    assert c.end(tx) == "EAGAIN"
    assert store.read("/b") == b"2"                      # nothing of tx applied
    # The transaction is gone after END, whatever the outcome.
    assert c.read("/a", tx=tx) == "ENOENT"
    assert c.end(tx) == "ENOENT"


def test_conflicting_delete_and_create_give_eagain(c, other):
    tx = c.start()
    c.read("/a", tx=tx)
    other.call(T.RM, "/a")
    assert c.end(tx) == "EAGAIN"
    tx = c.start()
    assert c.read("/later", tx=tx) == "ENOENT"
    other.write("/later", b"x")
    assert c.end(tx) == "EAGAIN"


def test_concurrent_creations_under_one_parent_conflict(store):
    one, two = Client(store, 0), Client(store, 0)
    t1, t2 = one.start(), two.start()
    one.write("/dir/x", b"1", tx=t1)
    two.write("/dir/y", b"2", tx=t2)
    assert one.end(t1) == "OK"
    assert two.end(t2) == "EAGAIN"
    assert store.directory("/dir") == ["x"]


def test_unrelated_concurrent_change_commits(c, other, store):
    tx = c.start()
    c.read("/a", tx=tx)
    c.write("/a", b"tx", tx=tx)
    other.write("/b", b"elsewhere")
    assert c.end(tx) == "OK"
    assert store.read("/a") == b"tx"
    assert store.read("/b") == b"elsewhere"


def test_two_transactions_interfering(store):
    # transaction.c example 4: TA1 reads A writes B, TA2 reads B writes A.
    one, two = Client(store, 0), Client(store, 0)
    t1, t2 = one.start(), two.start()
    one.read("/a", tx=t1)
    two.read("/b", tx=t2)
    one.write("/b", b"one", tx=t1)
    two.write("/a", b"two", tx=t2)
    assert one.end(t1) == "OK"
    assert two.end(t2) == "EAGAIN"
    assert (store.read("/a"), store.read("/b")) == (b"1", b"one")


def test_watches_fire_only_at_commit(c, other, store):
    other.call(T.WATCH, "/a", "w")
    other.call(T.WATCH, "/gone", "g")
    other.conn.take()
    store.write("/gone/x", "")
    assert other.events() == [b"/gone/x\0g\0"]
    tx = c.start()
    c.write("/a", b"x", tx=tx)
    c.call(T.RM, "/gone", tx=tx)
    assert other.events() == []
    assert c.end(tx) == "OK"
    assert sorted(other.events()) == [b"/a\0w\0", b"/gone\0g\0"]
    tx = c.start()
    c.write("/a", b"y", tx=tx)
    c.end(tx, commit=False)
    tx = c.start()
    c.read("/a", tx=tx)
    c.write("/a", b"z", tx=tx)
    store.write("/a", "race")
    assert other.events() == [b"/a\0w\0"]                # the racing write
    assert c.end(tx) == "EAGAIN"
    assert other.events() == []                          # abort and EAGAIN: nothing


def test_transaction_request_errors(c):
    assert c.call(T.READ, "/a", tx=999).payload == b"ENOENT\0"
    assert c.call(T.TRANSACTION_END, "T").payload == b"ENOENT\0"      # tx_id 0
    tx = c.start()
    assert c.call(T.TRANSACTION_START, "", tx=tx).payload == b"EBUSY\0"
    assert c.call(T.TRANSACTION_END, "X", tx=tx).payload == b"EINVAL\0"
    assert c.call(T.TRANSACTION_END, raw=b"T", tx=tx).payload == b"EINVAL\0"
    assert c.end(tx) == "OK"


def test_transactions_belong_to_their_connection(c, other):
    tx = c.start()
    assert other.call(T.READ, "/a", tx=tx).payload == b"ENOENT\0"


def test_transaction_quota(store):
    store.mkdir("/local/domain/1")
    store.set_perms("/local/domain/1", ["n1"])
    store.set_quota("transactions", 2)
    g = Client(store, 1)
    g.start()
    g.start()
    assert g.call(T.TRANSACTION_START, "").payload == b"ENOSPC\0"
    Client(store, 0).start()                             # dom0 is not limited


def test_transaction_node_quota(store):
    store.mkdir("/local/domain/1")
    store.set_perms("/local/domain/1", ["n1"])
    store.set_quota("transaction-nodes", 4)
    g = Client(store, 1)
    tx = g.start()
    for i in range(3):
        g.write("n%d" % i, b"", tx=tx)       # touches the parent and n0..n2
    assert g.call(T.WRITE, raw=b"n9\0", tx=tx).payload == b"ENOSPC\0"
    assert g.end(tx) == "OK"
    assert store.directory("/local/domain/1") == ["n0", "n1", "n2"]


def test_node_quota_inside_transaction(store):
    store.mkdir("/local/domain/1")
    store.set_perms("/local/domain/1", ["n1"])
    store.set_quota("nodes", 3)
    g = Client(store, 1)
    tx = g.start()
    g.write("x", b"", tx=tx)
    g.write("y", b"", tx=tx)
    assert g.call(T.WRITE, raw=b"z\0", tx=tx).payload == b"ENOSPC\0"
    assert g.end(tx) == "OK"
    assert store.owned_nodes(1) == 3


def test_directory_part_inside_transaction(c):
    tx = c.start()
    c.write("/d/x", b"", tx=tx)
    reply = c.call(T.DIRECTORY_PART, "/d", "0", tx=tx)
    assert reply.payload.split(b"\0")[1:] == [b"x", b"", b""]


def test_dom0_transaction_context_manager(store):
    with store.transaction() as t:
        t.write("/a", "in-tx")
        t.mkdir("/t/dir")
        assert t.read("/a") == b"in-tx"
        assert store.read("/a") == b"1"
        assert t.directory("/t") == ["dir"]
    assert store.read("/a") == b"in-tx"
    assert store.exists("/t/dir")
    with pytest.raises(XenStoreError) as info:          # a finished transaction
        t.read("/a")
    assert info.value.errno == "ENOENT"


def test_dom0_transaction_aborts_on_exception(store):
    with pytest.raises(KeyError):
        with store.transaction() as t:
            t.write("/a", "lost")
            t.rm("/b")
            raise KeyError("boom")
    assert store.read("/a") == b"1"
    assert store.read("/b") == b"2"
    assert store.dom0.transactions == {}


def test_dom0_transaction_conflict_raises_eagain(store):
    other = Client(store, 0)
    with pytest.raises(XenStoreError) as info:
        with store.transaction() as t:
            t.read("/a")
            other.write("/a", b"race")
            t.write("/b", "tx")
    assert info.value.errno == "EAGAIN"
    assert store.read("/b") == b"2"
