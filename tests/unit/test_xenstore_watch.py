"""Watch semantics: registration event, subtree matching, removals, relative
paths, permission filtering, depth, special watches, Python callbacks."""

import pytest

from qemu_xenpv.xenstore import XenStore, XenStoreError, XsType

T = XsType


class Client:
    def __init__(self, store, domid):
        self.store = store
        self.conn = store.connect(domid)
        self.req_id = 0

    def call(self, msg_type, *args, raw=None):
        payload = raw if raw is not None else b"".join(a.encode() + b"\0" for a in args)
        self.req_id += 1
        return self.store.handle(self.conn, msg_type, self.req_id, 0, payload)

    def watch(self, path, token="tok", *extra):
        reply = self.call(T.WATCH, path, token, *extra)
        assert (reply.type, reply.payload) == (T.WATCH, b"OK\0"), reply
        assert self.events() == [(path, token)]           # fires once at once
        return reply

    def write(self, path, value=b""):
        reply = self.call(T.WRITE, raw=path.encode() + b"\0" + value)
        assert reply.type == T.WRITE, reply

    def events(self):
        """Drain the outbox: the (path, token) of every watch event in it."""
        found = []
        for msg in self.conn.take():
            if msg.type == T.WATCH_EVENT:
                assert (msg.req_id, msg.tx_id) == (0, 0)
                path, token, tail = msg.payload.split(b"\0")
                assert tail == b""
                found.append((path.decode(), token.decode()))
        return found


@pytest.fixture
def store():
    s = XenStore()
    for domid in (1, 2):
        s.mkdir("/local/domain/%d" % domid)
        s.set_perms("/local/domain/%d" % domid, ["n%d" % domid])
    return s


@pytest.fixture
def dom0(store):
    return Client(store, 0)


@pytest.fixture
def dom1(store):
    return Client(store, 1)


@pytest.fixture
def dom2(store):
    return Client(store, 2)


def test_watch_reply_comes_before_the_registration_event(dom0):
    dom0.call(T.WATCH, "/w", "token")
    msgs = dom0.conn.take()
    assert [m.type for m in msgs] == [T.WATCH, T.WATCH_EVENT]
    assert msgs[1].payload == b"/w\0token\0"


def test_watch_fires_for_path_and_descendants_only(dom0, store):
    dom0.watch("/a")
    store.write("/a", "1")
    store.write("/a/b/c", "2")
    assert dom0.events() == [("/a", "tok"), ("/a/b/c", "tok")]
    store.write("/ab", "x")                 # a sibling sharing the prefix
    store.write("/", "root")                # an ancestor
    store.write("/other", "")
    assert dom0.events() == []


def test_root_watch_sees_everything_but_special_paths(dom0, store):
    dom0.watch("/")
    store.write("/x", "")
    store.introduce_domain(7, 1, 1)
    assert dom0.events() == [("/x", "tok")]


def test_mkdir_set_perms_and_rm_fire(dom0, store):
    dom0.watch("/m")
    store.mkdir("/m/n")
    assert dom0.events() == [("/m/n", "tok")]
    store.mkdir("/m/n")                      # exists: nothing changes, nothing fires
    assert dom0.events() == []
    store.set_perms("/m/n", ["n0", "r1"])
    assert dom0.events() == [("/m/n", "tok")]
    store.rm("/m/n")
    assert dom0.events() == [("/m/n", "tok")]


def test_removing_an_ancestor_fires_with_the_watched_path(dom0, store):
    store.write("/r/a/b", "")
    dom0.watch("/r/a/b", "deep")
    dom0.watch("/r/a/b/c", "missing")        # parent exists, node does not
    dom0.watch("/r", "top")
    store.rm("/r/a")
    assert sorted(dom0.events()) == sorted([
        ("/r/a/b", "deep"), ("/r/a/b/c", "missing"), ("/r/a", "top")])


def test_rm_of_a_missing_node_fires_nothing(dom0, store):
    store.mkdir("/r")
    dom0.watch("/r")
    store.rm("/r/none")
    assert dom0.events() == []


def test_writes_fire_watches_of_every_connection(dom0, store):
    other = Client(store, 0)
    other.watch("/s", "t2")
    dom0.watch("/s", "t1")
    dom0.write("/s/x", b"v")
    assert dom0.events() == [("/s/x", "t1")]
    assert other.events() == [("/s/x", "t2")]


def test_several_watches_same_path_different_tokens(dom0, store):
    dom0.watch("/s", "one")
    dom0.watch("/s", "two")
    store.write("/s", "")
    assert sorted(dom0.events()) == [("/s", "one"), ("/s", "two")]


def test_relative_watch_reports_relative_paths(dom1, store):
    dom1.watch("device", "dev")
    store.write("/local/domain/1/device/vif/0/state", "1")
    assert dom1.events() == [("device/vif/0/state", "dev")]
    store.rm("/local/domain/1/device")
    assert dom1.events() == [("device", "dev")]


def test_events_only_for_nodes_the_watcher_can_read(dom1, store):
    dom1.watch("/", "all")
    store.write("/secret", "x")                              # dom0-only: no event
    store.write("/local/domain/1/mine", "x")                 # readable: event
    store.write("/local/domain/2/theirs", "x")               # dom2's: no event
    assert dom1.events() == [("/local/domain/1/mine", "all")]
    store.write("/shared", "x")
    store.set_perms("/shared", ["n0", "r1"])                 # becomes readable: event
    assert dom1.events() == [("/shared", "all")]
    store.write("/shared", "y")
    assert dom1.events() == [("/shared", "all")]
    # Losing access still tells the watcher (old permissions count).
    store.set_perms("/shared", ["n0"])
    assert dom1.events() == [("/shared", "all")]
    store.write("/shared", "z")
    assert dom1.events() == []


def test_removal_of_readable_node_is_seen_even_if_parent_is_not(dom1, store):
    store.write("/hidden/visible", "")
    store.set_perms("/hidden/visible", ["n0", "r1"])
    dom1.watch("/hidden/visible")
    store.rm("/hidden")
    assert dom1.events() == [("/hidden/visible", "tok")]


def test_duplicate_watch_and_unwatch(dom0, store):
    dom0.watch("/u")
    reply = dom0.call(T.WATCH, "/u", "tok")
    assert (reply.type, reply.payload) == (T.ERROR, b"EEXIST\0")
    reply = dom0.call(T.UNWATCH, "/u", "tok")
    assert (reply.type, reply.payload) == (T.UNWATCH, b"OK\0")
    store.write("/u", "")
    assert dom0.events() == []
    reply = dom0.call(T.UNWATCH, "/u", "tok")
    assert (reply.type, reply.payload) == (T.ERROR, b"ENOENT\0")


@pytest.mark.parametrize("raw", [b"/u\0", b"/u\0t\0x\0y\0", b"", b"bad path\0t\0"])
def test_malformed_watch_requests(dom0, raw):
    reply = dom0.call(T.WATCH, raw=raw)
    assert (reply.type, reply.payload) == (T.ERROR, b"EINVAL\0")


def test_unwatch_matches_relative_and_absolute_forms(dom1):
    dom1.watch("x", "t")
    reply = dom1.call(T.UNWATCH, "/local/domain/1/x", "t")
    assert reply.type == T.UNWATCH


def test_watch_tx_id_is_ignored(dom0):
    reply = dom0.store.handle(dom0.conn, T.WATCH, 5, 12345, b"/w\0t\0")
    assert (reply.type, reply.tx_id) == (T.WATCH, 12345)


def test_reset_watches_drops_watches_and_transactions(dom0, store):
    dom0.watch("/z")
    tx_id = int(dom0.call(T.TRANSACTION_START, "").payload[:-1])
    reply = dom0.call(T.RESET_WATCHES, "")
    assert reply.payload == b"OK\0"
    store.write("/z", "")
    assert dom0.events() == []
    reply = dom0.store.handle(dom0.conn, T.READ, 1, tx_id, b"/z\0")
    assert reply.payload == b"ENOENT\0"


def test_depth_limited_watches(dom0, store):
    dom0.watch("/d", "d0", "0")
    dom0.watch("/d", "d1", "1")
    store.write("/d", "")
    store.write("/d/a", "")
    store.write("/d/a/b", "")
    assert dom0.events() == [("/d", "d0"), ("/d", "d1"), ("/d/a", "d1")]


def test_identical_pending_events_are_merged(dom0, store):
    dom0.watch("/m")
    store.write("/m", "1")
    store.write("/m", "2")
    store.write("/m/x", "3")
    assert dom0.events() == [("/m", "tok"), ("/m/x", "tok")]


def test_on_output_is_called_when_others_cause_events(dom0, store):
    kicked = []
    dom0.conn.on_output = kicked.append
    dom0.watch("/k")
    kicked.clear()
    store.write("/k", "")
    assert kicked == [dom0.conn]
    assert dom0.events() == [("/k", "tok")]
    store.write("/unwatched", "")
    assert kicked == [dom0.conn]


def test_python_callback_watch(store):
    seen = []
    store.watch("/cb", "tk", lambda path, token: seen.append((path, token)))
    assert seen == [("/cb", "tk")]
    store.write("/cb/x", "1")
    assert seen[-1] == ("/cb/x", "tk")
    store.unwatch("/cb", "tk")
    store.write("/cb/y", "1")
    assert len(seen) == 2
    with pytest.raises(XenStoreError) as info:
        store.unwatch("/cb", "tk")
    assert info.value.errno == "ENOENT"


def test_python_callback_may_write_to_the_store(store):
    def mirror(path, token):
        if path.startswith("/src/"):
            store.write("/dst/" + path[len("/src/"):], store.read(path))
    store.watch("/src", "m", mirror)
    store.write("/src/a", "1")
    assert store.read("/dst/a") == b"1"


def test_failing_callback_is_logged_not_raised(store, caplog):
    def boom(path, token):
        raise RuntimeError("callback bug")
    store.watch("/boom", "b", boom)
    store.write("/boom", "x")                 # does not raise
    assert "callback bug" in caplog.text
    assert store.read("/boom") == b"x"


def test_special_watches(store, dom0, dom1):
    dom0.watch("@introduceDomain", "intro")
    dom0.watch("@releaseDomain", "rel")
    dom0.watch("@releaseDomain/5", "rel5")
    dom1.watch("@introduceDomain", "intro")
    dom1.watch("@releaseDomain", "rel")
    store.introduce_domain(5, 0x1234, 3)
    store.introduce_domain(6, 0x1235, 4)
    # @introduceDomain is dom0's by default; guests are not told.
    assert dom0.events() == [("@introduceDomain", "intro")] * 2
    assert dom1.events() == []
    store.release_domain(5)
    # @releaseDomain is readable by everyone (DOMID_ANY), as xenstored sets it up.
    assert sorted(dom0.events()) == [("@releaseDomain", "rel"), ("@releaseDomain/5", "rel5")]
    assert dom1.events() == [("@releaseDomain", "rel")]
    store.release_domain(6)
    assert dom0.events() == [("@releaseDomain", "rel")]


def test_special_watch_with_depth_reports_domid(store, dom0):
    dom0.watch("@introduceDomain", "i", "1")
    store.introduce_domain(8, 1, 1)
    assert dom0.events() == [("@introduceDomain/8", "i")]


def test_special_watch_can_be_granted_to_a_guest(store, dom1):
    dom1.watch("@introduceDomain", "intro")
    store.set_perms("@introduceDomain", ["n0", "r1"])
    assert dom1.events() == [("@introduceDomain", "intro")]   # the SET_PERMS itself
    store.introduce_domain(9, 1, 1)
    assert dom1.events() == [("@introduceDomain", "intro")]


def test_unread_events_of_a_guest_are_capped(store, dom1, caplog):
    store.set_quota("memory", 300)
    dom1.watch("/local/domain/1", "t")
    for i in range(40):
        store.write("/local/domain/1/n%02d" % i, "")
    events = dom1.events()
    assert 0 < len(events) < 40
    assert events == [("/local/domain/1/n%02d" % i, "t") for i in range(len(events))]
    assert "dropped" in caplog.text
    store.write("/local/domain/1/later", "")          # room again once drained
    assert dom1.events() == [("/local/domain/1/later", "t")]


def test_dom0_events_are_never_capped(store, dom0):
    store.set_quota("memory", 100)
    dom0.watch("/big")
    for i in range(50):
        store.write("/big/n%02d" % i, "")
    assert len(dom0.events()) == 50
