"""INTRODUCE / RELEASE / IS_DOMAIN_INTRODUCED / RESUME: hooks, connection
cleanup, orphaned nodes, special watches."""

import pytest

from qemu_xenpv.xenstore import XenStore, XenStoreError, XsType

T = XsType


class Hooks:
    def __init__(self):
        self.calls = []
        self.fail = None

    def introduce(self, domid, mfn, port):
        if self.fail:
            raise self.fail
        self.calls.append(("introduce", domid, mfn, port))

    def release(self, domid):
        self.calls.append(("release", domid))


@pytest.fixture
def hooks():
    return Hooks()


@pytest.fixture
def store(hooks):
    return XenStore(hooks)


def call(store, conn, msg_type, *args, tx=0):
    payload = b"".join(a.encode() + b"\0" for a in args)
    reply = store.handle(conn, msg_type, 42, tx, payload)
    assert reply.req_id == 42
    return reply.type, reply.payload


def test_introduce_calls_the_hook_and_fires(store, hooks):
    dom0 = store.connect(0)
    seen = []
    store.watch("@introduceDomain", "i", lambda p, t: seen.append(p))
    assert call(store, dom0, T.IS_DOMAIN_INTRODUCED, "3") == (T.IS_DOMAIN_INTRODUCED, b"F\0")
    assert call(store, dom0, T.INTRODUCE, "3", "4660", "7") == (T.INTRODUCE, b"OK\0")
    assert hooks.calls == [("introduce", 3, 4660, 7)]
    assert seen == ["@introduceDomain", "@introduceDomain"]
    assert call(store, dom0, T.IS_DOMAIN_INTRODUCED, "3") == (T.IS_DOMAIN_INTRODUCED, b"T\0")
    assert call(store, dom0, T.IS_DOMAIN_INTRODUCED, "0") == (T.IS_DOMAIN_INTRODUCED, b"T\0")
    assert store.is_domain_introduced(0x7FF0)                    # DOMID_SELF


def test_introduce_frame_is_signed_decimal(store, hooks):
    dom0 = store.connect(0)
    assert call(store, dom0, T.INTRODUCE, "3", "-1", "7")[0] == T.INTRODUCE
    assert hooks.calls[-1] == ("introduce", 3, 0xFFFFFFFF, 7)


@pytest.mark.parametrize("args", [
    ("3", "1"), ("0", "1", "1"), ("x", "1", "1"), ("3", "zz", "1"), ("3", "1", "0"),
    ("3", "1", "-4"), ("70000", "1", "1"), ("32752", "1", "1"),
])
def test_bad_introduce_is_einval(store, hooks, args):
    assert call(store, store.connect(0), T.INTRODUCE, *args) == (T.ERROR, b"EINVAL\0")
    assert hooks.calls == []


def test_hook_errors_become_error_replies(store, hooks):
    dom0 = store.connect(0)
    hooks.fail = XenStoreError("ENOENT", "no such frame")
    assert call(store, dom0, T.INTRODUCE, "3", "1", "1") == (T.ERROR, b"ENOENT\0")
    hooks.fail = RuntimeError("mapping exploded")
    assert call(store, dom0, T.INTRODUCE, "3", "1", "1") == (T.ERROR, b"EIO\0")
    assert not store.is_domain_introduced(3)


def test_reintroduce_resets_the_domains_connections(store, hooks):
    guest = store.connect(3)
    resets = []
    guest.on_reset = resets.append
    intro = []
    store.watch("@introduceDomain", "i", lambda p, t: intro.append(p))
    intro.clear()
    store.introduce_domain(3, 10, 5)
    call(store, guest, T.WATCH, "/local/domain/3", "w")
    call(store, guest, T.TRANSACTION_START, "")
    store.introduce_domain(3, 10, 6)                       # e.g. after resume
    assert resets == [guest]
    assert guest.watches == [] and guest.transactions == {} and guest.take() == []
    assert intro == ["@introduceDomain"]                   # only the first time
    assert hooks.calls[-1] == ("introduce", 3, 10, 6)


def test_release(store, hooks):
    dom0 = store.connect(0)
    store.introduce_domain(5, 1, 1)
    guest = store.connect(5)
    call(store, guest, T.WATCH, "/", "w")
    call(store, guest, T.TRANSACTION_START, "")
    released = []
    store.watch("@releaseDomain", "r", lambda p, t: released.append(p))
    released.clear()
    assert call(store, dom0, T.RELEASE, "5") == (T.RELEASE, b"OK\0")
    assert hooks.calls[-1] == ("release", 5)
    assert guest.closed and guest.watches == [] and guest.transactions == {}
    assert released == ["@releaseDomain"]
    assert not store.is_domain_introduced(5)
    assert store.handle(guest, T.READ, 1, 0, b"x\0") is None
    assert call(store, dom0, T.RELEASE, "5") == (T.ERROR, b"ENOENT\0")
    assert call(store, dom0, T.RELEASE, "0") == (T.ERROR, b"EINVAL\0")
    assert call(store, dom0, T.RELEASE, "x") == (T.ERROR, b"EINVAL\0")


def test_release_removes_orphans_and_stale_permissions(store):
    store.introduce_domain(5, 1, 1)
    store.mkdir("/local/domain/5/device")
    store.set_perms("/local/domain/5", ["n0", "r5"])
    store.set_perms("/local/domain/5/device", ["n5"])
    store.write("/local/domain/5/device/vif/0", "x")
    store.write("/shared", "")
    store.set_perms("/shared", ["n0", "r5", "r6"])
    store.set_perms("@releaseDomain", ["n0", "r5"])
    watched = []
    store.watch("/local/domain/5/device/vif", "w", lambda p, t: watched.append(p))
    watched.clear()
    store.release_domain(5)
    assert not store.exists("/local/domain/5/device")       # owned by 5: deleted
    assert store.exists("/local/domain/5")                  # dom0's: kept ...
    assert [str(p) for p in store.get_perms("/local/domain/5")] == ["n0"]  # ... cleaned
    assert [str(p) for p in store.get_perms("/shared")] == ["n0", "r6"]
    assert [str(p) for p in store.get_perms("@releaseDomain")] == ["n0"]
    assert watched == ["/local/domain/5/device/vif"]
    assert store.owned_nodes(5) == 0


def test_keep_orphans_gives_them_to_dom0():
    store = XenStore(keep_orphans=True)
    store.introduce_domain(5, 1, 1)
    store.write("/local/domain/5/data", "x")
    store.set_perms("/local/domain/5/data", ["r5", "b7"])
    store.release_domain(5)
    assert store.read("/local/domain/5/data") == b"x"
    assert [str(p) for p in store.get_perms("/local/domain/5/data")] == ["r0", "b7"]


def test_resume(store):
    dom0 = store.connect(0)
    assert call(store, dom0, T.RESUME, "5") == (T.ERROR, b"ENOENT\0")
    store.introduce_domain(5, 1, 1)
    assert call(store, dom0, T.RESUME, "5") == (T.RESUME, b"OK\0")


def test_python_release_without_hooks():
    store = XenStore()
    store.introduce_domain(2, 1, 1)
    store.release_domain(2)
    with pytest.raises(XenStoreError) as info:
        store.release_domain(2)
    assert info.value.errno == "ENOENT"
