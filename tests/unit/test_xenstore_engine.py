"""The XenStore engine through its wire entry point and its dom0 helpers:
database operations, paths, permissions, quotas, error replies."""

import pytest

from qemu_xenpv.xenstore import XenStore, XenStoreError, XsType
from qemu_xenpv.xenstore.nodes import Perm
from qemu_xenpv.xenstore import protocol

T = XsType


class Client:
    """Speaks the wire protocol to the engine as one connection."""

    def __init__(self, store, domid, privileged=None):
        self.store = store
        self.conn = store.connect(domid, privileged=privileged)
        self.req_id = 100

    def call(self, msg_type, *args, tx=0, raw=None):
        payload = raw if raw is not None else b"".join(
            (a if isinstance(a, bytes) else a.encode()) + b"\0" for a in args)
        self.req_id += 1
        reply = self.store.handle(self.conn, msg_type, self.req_id, tx, payload)
        assert (reply.req_id, reply.tx_id) == (self.req_id, tx)
        # The reply is also the newest message of the outbox (what a transport sends).
        assert reply in self.conn.take()
        return reply

    def ok(self, msg_type, *args, **kw):
        reply = self.call(msg_type, *args, **kw)
        assert reply.type == msg_type, reply
        return reply.payload

    def err(self, msg_type, *args, **kw):
        reply = self.call(msg_type, *args, **kw)
        assert reply.type == T.ERROR, reply
        assert reply.payload.endswith(b"\0") and reply.payload.count(b"\0") == 1
        return reply.payload[:-1].decode()

    def write(self, path, value, **kw):
        return self.ok(T.WRITE, raw=path.encode() + b"\0" + value, **kw)


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


# ---- basic operations --------------------------------------------------------
def test_initial_tree_is_xenstoreds():
    s = XenStore()
    assert s.directory("/") == ["tool"]
    assert s.tree_dump("/") == ['tool = ""', ' xenstored = ""']
    assert [str(p) for p in s.get_perms("/")] == ["n0"]
    assert [str(p) for p in s.get_perms("@releaseDomain")] == ["n0", "r32757"]
    assert [str(p) for p in s.get_perms("@introduceDomain")] == ["n0"]


def test_write_read_reply_formats(dom0):
    assert dom0.write("/a", b"hello") == b"OK\0"
    assert dom0.ok(T.READ, "/a") == b"hello"               # raw value, no NUL added
    dom0.write("/a", b"bin\0ary\0")
    assert dom0.ok(T.READ, "/a") == b"bin\0ary\0"
    dom0.write("/empty", b"")
    assert dom0.ok(T.READ, "/empty") == b""


def test_write_creates_missing_parents_with_empty_values(dom0, store):
    dom0.write("/x/y/z", b"v")
    assert dom0.ok(T.READ, "/x") == b""
    assert dom0.ok(T.READ, "/x/y") == b""
    assert dom0.ok(T.DIRECTORY, "/x") == b"y\0"
    assert dom0.ok(T.DIRECTORY, "/x/y/z") == b""


def test_directory_lists_children_in_creation_order(dom0):
    for name in ("c", "a", "b"):
        dom0.write("/d/" + name, b"")
    assert dom0.ok(T.DIRECTORY, "/d") == b"c\0a\0b\0"
    dom0.ok(T.RM, "/d/a")
    assert dom0.ok(T.DIRECTORY, "/d") == b"c\0b\0"


def test_mkdir(dom0):
    assert dom0.ok(T.MKDIR, "/m/n") == b"OK\0"
    assert dom0.ok(T.READ, "/m/n") == b""
    dom0.write("/m/n", b"keep")
    assert dom0.ok(T.MKDIR, "/m/n") == b"OK\0"              # exists: left unchanged
    assert dom0.ok(T.READ, "/m/n") == b"keep"


def test_rm(dom0):
    dom0.write("/r/a/b", b"1")
    dom0.write("/r/c", b"2")
    assert dom0.ok(T.RM, "/r/a") == b"OK\0"
    assert dom0.err(T.READ, "/r/a") == "ENOENT"
    assert dom0.err(T.READ, "/r/a/b") == "ENOENT"
    assert dom0.ok(T.DIRECTORY, "/r") == b"c\0"
    # Removing what is not there is fine if its parent exists ...
    assert dom0.ok(T.RM, "/r/nothing") == b"OK\0"
    # ... but not if the parent is missing too.
    assert dom0.err(T.RM, "/r/nothing/deeper") == "ENOENT"
    assert dom0.err(T.RM, "/") == "EINVAL"


def test_relative_paths_are_below_the_domain_path(dom1, store):
    dom1.write("data/x", b"1")
    assert store.read("/local/domain/1/data/x") == b"1"
    assert dom1.ok(T.READ, "/local/domain/1/data/x") == b"1"
    assert dom1.ok(T.DIRECTORY, "data") == b"x\0"
    assert dom1.ok(T.GET_DOMAIN_PATH, "1") == b"/local/domain/1\0"
    assert dom1.ok(T.GET_DOMAIN_PATH, "7") == b"/local/domain/7\0"
    assert dom1.err(T.GET_DOMAIN_PATH, "x") == "EINVAL"
    assert dom1.err(T.GET_DOMAIN_PATH, "70000") == "EINVAL"


@pytest.mark.parametrize("path", [
    "", "/a//b", "/a/", "/a b", "/a!", "/a\tb", "@introduceDomain", "//", "/é",
])
def test_invalid_paths_get_einval(dom0, path):
    assert dom0.err(T.READ, path) == "EINVAL"
    assert dom0.err(T.WRITE, raw=path.encode() + b"\0v") == "EINVAL"


def test_path_length_limits(dom0, dom1):
    assert dom0.err(T.READ, "/" + "a" * 3072) == "EINVAL"       # > ABS_PATH_MAX
    assert dom0.err(T.READ, "/" + "a" * 3071) == "ENOENT"
    # Guests: at most 2048 bytes below their domain path (xenstored path-max).
    assert dom1.err(T.READ, "a" * 2049) == "EINVAL"
    assert dom1.err(T.READ, "a" * 2048) == "ENOENT"
    assert dom1.err(T.READ, "/local/domain/2/" + "a" * 2049) == "EINVAL"


def test_root_is_valid_path(dom0):
    assert dom0.ok(T.DIRECTORY, "/") == b"tool\0local\0"


@pytest.mark.parametrize("msg_type", [T.READ, T.MKDIR, T.RM, T.DIRECTORY, T.GET_PERMS])
@pytest.mark.parametrize("raw", [b"", b"/tool", b"/tool\0/x\0", b"/tool\0junk"])
def test_single_argument_requests_must_be_exactly_one_string(dom0, msg_type, raw):
    assert dom0.err(msg_type, raw=raw) == "EINVAL"


def test_write_without_nul_is_einval(dom0):
    assert dom0.err(T.WRITE, raw=b"/a") == "EINVAL"


# ---- permissions ------------------------------------------------------------------
def test_guest_cannot_touch_dom0_nodes(dom1):
    assert dom1.err(T.READ, "/tool") == "EACCES"
    assert dom1.err(T.WRITE, raw=b"/tool\0x") == "EACCES"
    assert dom1.err(T.DIRECTORY, "/") == "EACCES"
    assert dom1.err(T.RM, "/tool/xenstored") == "EACCES"
    assert dom1.err(T.MKDIR, "/newtop") == "EACCES"


def test_enoent_only_told_when_parent_is_accessible(dom1):
    assert dom1.err(T.READ, "missing") == "ENOENT"                 # own dir readable
    assert dom1.err(T.READ, "/local/domain/2/missing") == "EACCES"  # hides existence
    assert dom1.err(T.READ, "/nowhere/deep") == "EACCES"


def test_guest_creates_nodes_it_owns_inheriting_permissions(store, dom0, dom1):
    store.set_perms("/local/domain/1", ["n1", "r2"])
    dom1.write("a/b", b"v")
    assert dom1.ok(T.GET_PERMS, "a") == b"n1\0r2\0"
    assert dom1.ok(T.GET_PERMS, "a/b") == b"n1\0r2\0"
    # dom0 creating below keeps the parent's owner.
    store.set_perms("/local/domain/1/a", ["b0", "r1"])
    dom0.write("/local/domain/1/a/c", b"")
    assert dom0.ok(T.GET_PERMS, "/local/domain/1/a/c") == b"b0\0r1\0"


def test_permission_entries(store, dom1, dom2):
    dom3 = Client(store, 3)
    store.write("/p", b"v")
    store.set_perms("/p", ["r0", "n2", "w3"])   # everyone reads by default, except 2
    assert dom1.ok(T.READ, "/p") == b"v"
    assert dom2.err(T.READ, "/p") == "EACCES"
    assert dom3.err(T.READ, "/p") == "EACCES"                # w only
    assert dom3.write("/p", b"w") == b"OK\0"
    assert dom1.err(T.WRITE, raw=b"/p\0x") == "EACCES"
    store.set_perms("/p", ["n1"])                              # the owner may do anything
    assert dom1.ok(T.READ, "/p") == b"w"
    assert dom1.write("/p", b"own") == b"OK\0"
    assert dom2.err(T.READ, "/p") == "EACCES"


def test_domid_any_entry_matches_everyone(store, dom1, dom2):
    store.write("/any", b"v")
    store.set_perms("/any", ["n0", "r32757"])
    assert dom1.ok(T.READ, "/any") == b"v"
    assert dom2.ok(T.READ, "/any") == b"v"


def test_set_perms_rules(store, dom0, dom1, dom2):
    dom1.write("mine", b"")
    assert dom1.ok(T.SET_PERMS, "mine", "n1", "r2") == b"OK\0"
    assert dom1.ok(T.GET_PERMS, "mine") == b"n1\0r2\0"
    assert dom2.ok(T.GET_PERMS, "/local/domain/1/mine") == b"n1\0r2\0"
    # Only the owner (or dom0) may change permissions; only dom0 the owner.
    assert dom2.err(T.SET_PERMS, "/local/domain/1/mine", "n2") == "EACCES"
    store.set_perms("/local/domain/1/mine", ["n1", "b2"])
    assert dom2.err(T.SET_PERMS, "/local/domain/1/mine", "n2") == "EACCES"
    assert dom1.err(T.SET_PERMS, "mine", "n2") == "EPERM"
    assert dom0.ok(T.SET_PERMS, "/local/domain/1/mine", "n2") == b"OK\0"
    assert dom2.ok(T.GET_PERMS, "/local/domain/1/mine") == b"n2\0"


@pytest.mark.parametrize("perm", ["x1", "r", "r-1", "r70000", "rabc", "r 1", "b0x5"])
def test_malformed_permissions_are_einval(dom0, perm):
    dom0.write("/q", b"")
    assert dom0.err(T.SET_PERMS, "/q", perm) == "EINVAL"
    assert dom0.err(T.SET_PERMS, "/q") == "EINVAL"            # no permission at all


def test_unprivileged_domain_zero_is_checked():
    s = XenStore()
    s.write("/five", "v")
    s.set_perms("/five", ["n5"])
    assert Client(s, 0).ok(T.READ, "/five") == b"v"
    assert Client(s, 0, privileged=False).err(T.READ, "/five") == "EACCES"
    assert Client(s, 9, privileged=True).ok(T.READ, "/five") == b"v"


def test_set_target_grants_targets_rights(store, dom0):
    dm = Client(store, 5)
    store.introduce_domain(5, 1, 1)
    store.introduce_domain(1, 2, 2)
    assert dm.err(T.READ, "/local/domain/1") == "EACCES"
    assert dom0.ok(T.SET_TARGET, "5", "1") == b"OK\0"
    assert dm.ok(T.READ, "/local/domain/1") == b""
    assert dom0.err(T.SET_TARGET, "5", "9") == "ENOENT"


# ---- quotas ------------------------------------------------------------------------
def test_node_quota(store, dom0):
    store.set_quota("nodes", 6)
    dom1 = Client(store, 1)
    for i in range(5):
        dom1.write("n%d" % i, b"")
    assert store.owned_nodes(1) == 6                  # includes /local/domain/1 itself
    assert dom1.err(T.WRITE, raw=b"n9\0") == "ENOSPC"
    assert dom1.err(T.MKDIR, "n9") == "ENOSPC"
    dom1.ok(T.RM, "n0")
    dom1.ok(T.RM, "n1")
    assert dom1.write("n9", b"") == b"OK\0"
    assert dom1.err(T.WRITE, raw=b"a/b\0") == "ENOSPC"   # two new nodes, room for one
    assert dom1.err(T.READ, "a") == "ENOENT"               # nothing half-created
    for i in range(10):                                     # dom0 is never limited
        dom0.write("/local/domain/1/dom0-%d" % i, b"")


def test_per_domain_quota_overrides_global(store):
    store.set_quota("nodes", 2, domid=1)
    dom1, dom2 = Client(store, 1), Client(store, 2)
    dom1.write("a", b"")
    assert dom1.err(T.WRITE, raw=b"b\0") == "ENOSPC"
    for i in range(5):
        dom2.write("x%d" % i, b"")


def test_node_size_quota(dom1, dom0):
    assert dom1.write("big", b"x" * 2048) == b"OK\0"
    assert dom1.err(T.WRITE, raw=b"big\0" + b"x" * 2049) == "ENOSPC"
    assert dom1.ok(T.READ, "big") == b"x" * 2048
    assert dom0.write("/big", b"x" * 4000) == b"OK\0"


def test_permission_count_quota(dom1):
    dom1.write("p", b"")
    assert dom1.ok(T.SET_PERMS, "p", "n1", "r2", "r3", "r4", "r5") == b"OK\0"
    assert dom1.err(T.SET_PERMS, "p", "n1", "r2", "r3", "r4", "r5", "r6") == "ENOSPC"


def test_watch_quota(store, dom1):
    store.set_quota("watches", 2)
    dom1.ok(T.WATCH, "a", "t1")
    dom1.ok(T.WATCH, "a", "t2")
    assert dom1.err(T.WATCH, "a", "t3") == "ENOSPC"
    dom1.ok(T.UNWATCH, "a", "t1")
    assert dom1.ok(T.WATCH, "a", "t3") == b"OK\0"


def test_default_quotas_are_xenstoreds():
    s = XenStore()
    q = s.quotas
    assert (q["nodes"], q["node-size"], q["watches"], q["transactions"]) == (1000, 2048, 128, 10)
    with pytest.raises(ValueError):
        XenStore(quotas={"bogus": 1})


# ---- message handling -------------------------------------------------------------------
@pytest.mark.parametrize("msg_type", [20, 27, 99, T.WATCH_EVENT, T.ERROR, 0xFFFF, 0xFFFFFFFF])
def test_unknown_or_reply_only_types_are_enosys(dom1, msg_type):
    assert dom1.err(msg_type, "x") == "ENOSYS"


@pytest.mark.parametrize("msg_type", [T.INTRODUCE, T.RELEASE, T.IS_DOMAIN_INTRODUCED,
                                      T.RESUME, T.SET_TARGET, T.CONTROL, T.SET_FEATURE,
                                      T.GET_QUOTA, T.SET_QUOTA])
def test_privileged_requests_refused_to_guests(dom1, msg_type):
    assert dom1.err(msg_type, "1", "2", "3") == "EACCES"


def test_oversized_request_payload_is_e2big(dom0):
    assert dom0.err(T.WRITE, raw=b"/a\0" + b"x" * 4100) == "E2BIG"


def test_internal_bug_answers_eio_and_does_not_raise(dom0, monkeypatch):
    def broken(*_args):
        raise RuntimeError("bug")
    monkeypatch.setitem(protocol.WIRE_FUNCS, T.READ,
                        protocol.WireFunc("READ", broken))
    assert dom0.err(T.READ, "/tool") == "EIO"
    assert dom0.ok(T.DIRECTORY, "/") == b"tool\0local\0"


def test_closed_connection_is_ignored(store):
    c = store.connect(1)
    store.disconnect(c)
    assert store.handle(c, T.READ, 1, 0, b"x\0") is None
    assert c.take() == []


# ---- DIRECTORY_PART ---------------------------------------------------------------------
def _many_children(store, count=120, width=40):
    names = ["child-%03d-" % i + "x" * width for i in range(count)]
    for name in names:
        store.mkdir("/big/" + name)
    return names


def test_directory_too_large_for_one_reply_is_e2big(store, dom0):
    _many_children(store)
    assert dom0.err(T.DIRECTORY, "/big") == "E2BIG"


def test_directory_part_pages_through_a_large_list(store, dom0):
    names = _many_children(store)
    collected = b""
    gens = set()
    offset = 0
    pages = 0
    while True:
        reply = dom0.ok(T.DIRECTORY_PART, "/big", str(offset))
        assert len(reply) <= 4096
        gen, _, rest = reply.partition(b"\0")
        gens.add(int(gen))
        pages += 1
        if rest.endswith(b"\0\0") or rest == b"\0":        # the list is complete
            collected += rest[:-1]
            break
        collected += rest
        offset += len(rest)
    assert pages >= 2
    assert len(gens) == 1
    assert collected.split(b"\0")[:-1] == [n.encode() for n in names]


def test_directory_part_generation_changes_with_children(store, dom0):
    store.mkdir("/g/a")
    gen1 = dom0.ok(T.DIRECTORY_PART, "/g", "0")
    assert gen1.split(b"\0")[1:] == [b"a", b"", b""]
    assert dom0.ok(T.DIRECTORY_PART, "/g", "0") == gen1          # unchanged
    store.mkdir("/g/b")
    gen2 = dom0.ok(T.DIRECTORY_PART, "/g", "0")
    assert gen2.split(b"\0")[0] != gen1.split(b"\0")[0]
    assert gen2.split(b"\0")[1:] == [b"a", b"b", b"", b""]


def test_directory_part_offset_past_end_and_errors(store, dom0, dom1):
    store.mkdir("/g/a")
    reply = dom0.ok(T.DIRECTORY_PART, "/g", "100")
    gen = reply.split(b"\0")[0]
    assert reply == gen + b"\0\0"
    empty = dom0.ok(T.DIRECTORY_PART, "/g/a", "0")
    assert empty.endswith(b"\0\0") and empty.count(b"\0") == 2
    assert dom0.err(T.DIRECTORY_PART, "/g") == "EINVAL"
    assert dom0.err(T.DIRECTORY_PART, "/g", "x") == "EINVAL"
    assert dom0.err(T.DIRECTORY_PART, raw=b"/g\0" + b"0") == "EINVAL"
    assert dom0.err(T.DIRECTORY_PART, "/nothing", "0") == "ENOENT"
    assert dom1.err(T.DIRECTORY_PART, "/g", "0") == "EACCES"


# ---- domain-0 helpers ------------------------------------------------------------------
def test_python_helpers(store):
    store.write("/h/a", "text")                    # str values are UTF-8 encoded
    store.write("/h/b", b"\x00\xff")
    assert store.read("/h/a") == b"text"
    assert store.read("/h/b") == b"\x00\xff"
    assert store.directory("/h") == ["a", "b"]
    assert store.exists("/h/a") and not store.exists("/h/zz")
    store.set_perms("/h/a", [Perm("n", 3), "r4"])
    assert store.get_perms("/h/a") == [Perm("n", 3), Perm("r", 4)]
    store.mkdir("/h/c/d")
    store.rm("/h/c")
    assert store.directory("/h") == ["a", "b"]
    with pytest.raises(XenStoreError) as info:
        store.read("/h/zz")
    assert info.value.errno == "ENOENT"
    with pytest.raises(XenStoreError) as info:
        store.write("/bad path", "x")
    assert info.value.errno == "EINVAL"
    # Relative paths are dom0's.
    store.write("name", "Domain-0")
    assert store.read("/local/domain/0/name") == b"Domain-0"


def test_tree_dump_looks_like_xenstore_ls(store):
    store.write("/local/domain/1/name", "guest")
    store.write("/local/domain/1/odd", b'tab\tnl\nq"bs\\\x01\x7f')
    assert store.tree_dump("/local") == [
        'domain = ""',
        ' 1 = ""',
        '  name = "guest"',
        '  odd = "tab\\tnl\\nq"bs\\\\\\001\\x7f"',
        ' 2 = ""',
    ]
    assert store.tree_dump("/local/domain/1", perms=True)[0] == 'name = "guest"  (n1)'
    with pytest.raises(XenStoreError):
        store.tree_dump("/missing")


def test_deep_trees_do_not_hit_the_recursion_limit(store):
    deep = "/d" + "/a" * 1500
    store.write(deep, "v")
    assert len(store.tree_dump("/d")) == 1500
    store.rm("/d")
    assert not store.exists("/d")


# ---- CONTROL, features, quotas on the wire ---------------------------------------------
def test_control(dom0, caplog):
    assert dom0.ok(T.CONTROL, "check") == b"OK\0"
    assert dom0.ok(T.CONTROL, "log").startswith(b"Log switch settings:\n")
    assert dom0.ok(T.CONTROL, "log", "+io") == b"OK\0"
    assert b"io      : on" in dom0.ok(T.CONTROL, "log")
    assert dom0.ok(T.CONTROL, "log", "off") == b"OK\0"
    with caplog.at_level("INFO", logger="qemu_xenpv.xenstore"):
        assert dom0.ok(T.CONTROL, "print", "hello there") == b"OK\0"
    assert "control: hello there" in caplog.text
    assert b"print" in dom0.ok(T.CONTROL, "help")
    assert dom0.err(T.CONTROL, "frobnicate") == "EINVAL"
    assert dom0.err(T.CONTROL, raw=b"") == "EINVAL"
    assert dom0.err(T.CONTROL, "print") == "EINVAL"
    assert dom0.ok(T.CONTROL, "quota", "set", "nodes", "77") == b"OK\0"
    assert b"nodes" in dom0.ok(T.CONTROL, "quota")
    assert dom0.store.quotas["nodes"] == 77
    assert dom0.ok(T.DEBUG, "check") == b"OK\0"               # DEBUG alias


def test_features(store, dom0, dom1):
    assert dom1.ok(T.GET_FEATURE) == b"15\0"
    assert dom1.err(T.GET_FEATURE, "0") == "EACCES"
    assert dom0.ok(T.SET_FEATURE, "3", "2") == b"OK\0"
    assert dom0.ok(T.GET_FEATURE, "3") == b"2\0"
    assert dom0.err(T.SET_FEATURE, "3", "16") == "EINVAL"
    store.introduce_domain(4, 1, 1)
    assert dom0.err(T.SET_FEATURE, "4", "2") == "EBUSY"


def test_watch_depth_needs_the_feature(store, dom0):
    store.set_features(3, 2)
    dom3 = Client(store, 3)
    assert dom3.err(T.WATCH, "/a", "t", "1") == "EINVAL"
    assert dom0.ok(T.WATCH, "/a", "t", "1") == b"OK\0"


def test_quotas_on_the_wire(dom0, store):
    names = dom0.ok(T.GET_QUOTA)[:-1].decode().split(" ")
    assert {"nodes", "watches", "transactions", "node-size"} <= set(names)
    assert dom0.ok(T.GET_QUOTA, "nodes") == b"1000\0"
    assert dom0.ok(T.SET_QUOTA, "1", "nodes", "12") == b"OK\0"
    assert dom0.ok(T.GET_QUOTA, "1", "nodes") == b"12\0"
    assert dom0.ok(T.GET_QUOTA, "nodes") == b"1000\0"
    assert dom0.ok(T.SET_QUOTA, "watches", "3") == b"OK\0"
    assert store.quotas["watches"] == 3
    assert dom0.err(T.GET_QUOTA, "bogus") == "EINVAL"
    assert dom0.err(T.SET_QUOTA, "nodes") == "EINVAL"
    assert dom0.err(T.SET_QUOTA, "nodes", "-1") == "EINVAL"
