"""The XenStore engine: nodes, permissions, transactions, watches, domains.

Independent of any transport.  A transport (``ring.py``) owns a
:class:`Connection` obtained from :meth:`XenStore.connect`, feeds it requests
with :meth:`XenStore.handle`, and drains what the engine queued for it:

* every outgoing message of a connection -- the reply to each request and every
  watch event, in the order they must be sent -- goes into that connection's
  outbox (``conn.pop()`` / ``conn.take()``);
* after each engine operation, ``conn.on_output(conn)`` is called for every
  connection whose outbox grew (watch events caused by *another* connection's
  request arrive this way), so a transport only has to flush.

Domain 0 and the hypervisor use the direct helpers (:meth:`XenStore.read`,
``write``, ``mkdir``, ``rm``, ``directory``, ``get_perms``, ``set_perms``,
``watch``/``unwatch``, ``transaction()``, ``introduce_domain``,
``release_domain``), which act as privileged domain 0 without wire encoding and
raise :class:`XenStoreError` on failure.

The semantics follow ``docs/misc/xenstore.txt`` and C xenstored
(``tools/xenstored``), with the watch-on-removal rule of the spec and oxenstored
(removing an ancestor of a watched path fires that watch with its own path).
The engine is single-threaded: call it from one thread (the asyncio loop).
"""

import collections
import contextlib
import logging
import re
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from . import protocol
from .nodes import (
    PERM_OWNER, PERM_READ, PERM_WRITE, Node, Perm, XenStoreError, access_bits,
    basename_of, check_path_shape, encode, is_child, join_child,
    parent_of, parse_perms, sanitise_value, valid_path_chars,
)
from .wire import (
    DOMID_ANY, DOMID_FIRST_RESERVED, DOMID_SELF, XENSTORE_PAYLOAD_MAX,
    XENSTORE_REL_PATH_MAX, XENSTORE_SERVER_FEATURE_DOMID_ANY,
    XENSTORE_SERVER_FEATURE_ERROR, XENSTORE_SERVER_FEATURE_RECONNECTION,
    XENSTORE_SERVER_FEATURE_WATCHDEPTH, XSD_SOCKMSG_SIZE, Message, XsType,
)

__all__ = ["XenStore", "Connection", "Dom0Transaction", "DEFAULT_QUOTAS",
           "SUPPORTED_FEATURES", "XenStoreError", "Perm"]

log = logging.getLogger("qemu_xenpv.xenstore")

# What this store offers in every ring's server_features (and GET_FEATURE).
SUPPORTED_FEATURES = (XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR
                      | XENSTORE_SERVER_FEATURE_WATCHDEPTH | XENSTORE_SERVER_FEATURE_DOMID_ANY)

# Per-domain limits, named as xenstored's GET_QUOTA/SET_QUOTA names them, with
# xenstored's defaults.  0 disables a limit; privileged connections are never
# limited.  A limit N allows N (the N+1st is refused).  Every refusal answers
# ENOSPC, as C xenstored does, except "path-max" which answers EINVAL.
DEFAULT_QUOTAS: Dict[str, int] = {
    "nodes": 1000,               # nodes owned by the domain
    "watches": 128,              # watches registered by the domain
    "transactions": 10,          # open transactions of the domain
    "transaction-nodes": 1024,   # nodes one transaction may touch
    "node-permissions": 5,       # entries in one SET_PERMS
    "path-max": XENSTORE_REL_PATH_MAX,  # path length below /local/domain/<id>/
    "node-size": 2048,           # value bytes + child-list bytes of one node
    "memory": 2560 * 1024,       # queued outgoing bytes; later watch events dropped
}

# How a change matches watches (watch.c enum watch_match, plus the spec's rule
# for removals).
_SUBTREE = 0    # change of path: watches on path or any ancestor
_RM = 1         # removal of path: as _SUBTREE, plus every watch below path
_NODEPTH = 2    # special event: watches exactly on path without a depth
_DEPTH = 3      # special event "@x/<domid>": exact, or below a watch with depth > 0

_LOCAL_DOMAIN_PREFIX = re.compile(r"/local/domain/[0-9]{1,5}/")


def domain_path(domid: int) -> str:
    """GET_DOMAIN_PATH: the base of a domain's relative paths."""
    return "/local/domain/%d" % domid


class _Watch:
    __slots__ = ("conn", "path", "token", "depth", "prefix_len", "callback")

    def __init__(self, conn, path, token, depth, prefix_len, callback):
        self.conn = conn
        self.path = path              # canonical (absolute or "@...")
        self.token = token
        self.depth = depth            # -1: unlimited
        self.prefix_len = prefix_len  # strip this much for relative watches
        self.callback = callback      # Python watch: callback(path, token)

    def event_path(self, abs_path: str) -> str:
        return abs_path[self.prefix_len:]


class _Access:
    """A node as one transaction sees it (transaction.c struct accessed_node)."""

    __slots__ = ("node", "generation", "checked", "modified")

    def __init__(self, node, checked):
        self.node = node
        self.generation = node.generation if node is not None else None
        self.checked = checked        # compare generation at commit
        self.modified = False


class _Transaction:
    __slots__ = ("id", "conn", "accessed", "events")

    def __init__(self, tx_id, conn):
        self.id = tx_id
        self.conn = conn
        self.accessed: Dict[str, _Access] = {}
        self.events: Dict[str, int] = {}   # path -> match kind, fired at commit

    def queue_event(self, path, kind):
        # A removal event replaces a plain change event, not the other way round.
        self.events[path] = max(kind, self.events.get(path, kind))


class Connection:
    """One client of the store: a domain's ring, or an in-process caller.

    ``on_output(conn)``: called after an engine operation queued messages here.
    ``on_reset(conn)``: called when INTRODUCE of an already introduced domain
    resets its connections (a ring transport then empties its rings).
    """

    def __init__(self, store, conn_id: int, domid: int, privileged: bool):
        self.store = store
        self.id = conn_id
        self.domid = domid
        self.privileged = privileged
        self.closed = False
        self.on_output: Optional[Callable[["Connection"], None]] = None
        self.on_reset: Optional[Callable[["Connection"], None]] = None
        self._outbox: "collections.deque[Message]" = collections.deque()
        self._outbox_bytes = 0
        self._queued_events: "collections.Counter[bytes]" = collections.Counter()
        self.watches: List[_Watch] = []
        self.transactions: Dict[int, _Transaction] = {}
        self._next_tx_id = 1

    @property
    def base_path(self) -> str:
        return domain_path(self.domid)

    # ---- the outbox, drained by the transport ----
    def pending(self) -> int:
        """Number of queued outgoing messages."""
        return len(self._outbox)

    def pop(self) -> Optional[Message]:
        """Take the oldest queued message, or None."""
        if not self._outbox:
            return None
        msg = self._outbox.popleft()
        self._outbox_bytes -= XSD_SOCKMSG_SIZE + len(msg.payload)
        if msg.type == XsType.WATCH_EVENT:
            self._queued_events[msg.payload] -= 1
            if not self._queued_events[msg.payload]:
                del self._queued_events[msg.payload]
        return msg

    def take(self) -> List[Message]:
        """Take every queued message, oldest first."""
        msgs = list(self._outbox)
        self._outbox.clear()
        self._outbox_bytes = 0
        self._queued_events.clear()
        return msgs

    def _push(self, msg: Message) -> None:
        self._outbox.append(msg)
        self._outbox_bytes += XSD_SOCKMSG_SIZE + len(msg.payload)
        if msg.type == XsType.WATCH_EVENT:
            self._queued_events[msg.payload] += 1

    def __repr__(self) -> str:
        return "<xenstore conn %d dom%d%s%s>" % (
            self.id, self.domid, " priv" if self.privileged else "",
            " closed" if self.closed else "")


class _Dom0Api:
    """The direct helpers, acting as privileged domain 0 (optionally in a
    transaction).  Paths are str; values are bytes (str is UTF-8 encoded)."""

    _api_store: "XenStore"
    _api_tx: Optional[_Transaction]

    def _tx(self) -> Optional[_Transaction]:
        tx = self._api_tx
        if tx is not None and self._api_store._dom0.transactions.get(tx.id) is not tx:
            raise XenStoreError("ENOENT", "transaction %d has ended" % tx.id)
        return tx

    def read(self, path: str) -> bytes:
        s = self._api_store
        with s._operation():
            return s.op_read(s._dom0, self._tx(), path)

    def write(self, path: str, value) -> None:
        s = self._api_store
        with s._operation():
            s.op_write(s._dom0, self._tx(), path, encode(value))

    def mkdir(self, path: str) -> None:
        s = self._api_store
        with s._operation():
            s.op_mkdir(s._dom0, self._tx(), path)

    def rm(self, path: str) -> None:
        s = self._api_store
        with s._operation():
            s.op_rm(s._dom0, self._tx(), path)

    def directory(self, path: str) -> List[str]:
        s = self._api_store
        with s._operation():
            return list(s.op_directory(s._dom0, self._tx(), path).children)

    def exists(self, path: str) -> bool:
        try:
            self.read(path)
        except XenStoreError as e:
            if e.errno == "ENOENT":
                return False
            raise
        return True

    def get_perms(self, path: str) -> List[Perm]:
        s = self._api_store
        with s._operation():
            return list(s.op_get_perms(s._dom0, self._tx(), path))

    def set_perms(self, path: str, perms: Iterable) -> None:
        """``perms``: Perm objects or strings like "n0", "r5"; first is the owner."""
        s = self._api_store
        with s._operation():
            s.op_set_perms(s._dom0, self._tx(), path, parse_perms(perms))


class Dom0Transaction(_Dom0Api):
    """What ``with store.transaction() as t`` gives: the helpers, in a transaction."""

    def __init__(self, store: "XenStore", tx: _Transaction):
        self._api_store = store
        self._api_tx = tx

    @property
    def id(self) -> int:
        return self._api_tx.id


class XenStore(_Dom0Api):
    """The store.  ``hooks`` may provide ``introduce(domid, mfn, port)`` and
    ``release(domid)``, called on INTRODUCE/RELEASE (to map/unmap the ring and
    bind/unbind the event channel); raising XenStoreError fails the request.

    ``quotas`` overrides entries of :data:`DEFAULT_QUOTAS`.  ``keep_orphans``:
    on RELEASE, keep (and give to dom0) nodes the domain owned instead of
    deleting them (xenstored's -K).
    """

    def __init__(self, hooks=None, *, quotas: Optional[Dict[str, int]] = None,
                 keep_orphans: bool = False):
        self.hooks = hooks
        self.keep_orphans = keep_orphans
        self.quotas = dict(DEFAULT_QUOTAS)
        for name, value in (quotas or {}).items():
            if name not in DEFAULT_QUOTAS:
                raise ValueError("unknown XenStore quota %r" % name)
            self.quotas[name] = int(value)
        self.trace_io = False               # CONTROL log +io: every request at INFO
        self._domain_quotas: Dict[int, Dict[str, int]] = {}
        self._features: Dict[int, int] = {}
        self._introduced: Dict[int, Tuple[int, int]] = {}   # domid -> (mfn, port)
        self._targets: Dict[int, int] = {}
        self._nodes: Dict[str, Node] = {}
        self._owned: "collections.Counter[int]" = collections.Counter()
        self._generation = 0
        self._conns: List[Connection] = []
        self._next_conn_id = 1
        self._depth = 0
        self._flushing = False
        # where Python watch callbacks run: None = at once, else
        # schedule(func, *args) (xenstored: on the event loop thread)
        self.schedule: Optional[Callable[..., None]] = None
        self._deferred: "collections.deque" = collections.deque()
        self._kicks: Dict[int, Connection] = {}
        self._post_reply: List[Tuple[Connection, str, str]] = []
        self._unknown_logged = set()
        # setup_structure(): the initial tree, everything owned by dom0.
        no_access = (Perm("n", 0),)
        self._put(None, "/", Node(b"", no_access, ("tool",)))
        self._put(None, "/tool", Node(b"", no_access, ("xenstored",)))
        self._put(None, "/tool/xenstored", Node(b"", no_access))
        self._put(None, "@releaseDomain", Node(b"", (Perm("n", 0), Perm("r", DOMID_ANY))))
        self._put(None, "@introduceDomain", Node(b"", no_access))
        self._dom0 = self.connect(0, privileged=True)
        self._api_store = self
        self._api_tx = None

    domain_path = staticmethod(domain_path)

    # ------------------------------------------------------------------
    # connections
    # ------------------------------------------------------------------
    def connect(self, domid: int, *, privileged: Optional[bool] = None) -> Connection:
        """A new client connection for ``domid``.  ``privileged`` defaults to
        ``domid == 0`` (xenstored treats domain 0 as privileged)."""
        if privileged is None:
            privileged = domid == 0
        conn = Connection(self, self._next_conn_id, domid, bool(privileged))
        self._next_conn_id += 1
        self._conns.append(conn)
        return conn

    def disconnect(self, conn: Connection) -> None:
        """Forget a connection: its watches, transactions and queued output."""
        if conn.closed:
            return
        self.reset_connection(conn)
        conn.closed = True
        self._conns.remove(conn)
        self._kicks.pop(conn.id, None)

    def reset_connection(self, conn: Connection) -> None:
        """Drop watches, transactions and queued output (RESET_WATCHES plus the
        ring reconnect / broken-ring cleanup)."""
        conn.watches.clear()
        conn.transactions.clear()
        conn.take()

    def connections(self, domid: Optional[int] = None) -> List[Connection]:
        return [c for c in self._conns if domid is None or c.domid == domid]

    # ------------------------------------------------------------------
    # the wire entry point
    # ------------------------------------------------------------------
    def handle(self, conn: Connection, msg_type: int, req_id: int, tx_id: int,
               payload: bytes) -> Optional[Message]:
        """Process one request from ``conn``.

        The reply (and any watch events) are queued in ``conn``'s outbox, which
        is what a transport sends; the reply is also returned for convenience.
        Never raises for bad input: errors become XS_ERROR replies.  Returns
        None, doing nothing, if ``conn`` is closed.
        """
        if conn.closed:
            log.warning("request %d from closed connection %r ignored", msg_type, conn)
            return None
        with self._operation():
            reply = protocol.dispatch(self, conn, msg_type, req_id, tx_id, bytes(payload))
            conn._push(reply)
            self._kick(conn)
            self._flush_post_reply()
        return reply

    def log_unknown_once(self, msg_type: int, conn: Connection) -> None:
        if msg_type not in self._unknown_logged:
            self._unknown_logged.add(msg_type)
            log.warning("dom%d sent unknown XenStore message type %d (ENOSYS)",
                        conn.domid, msg_type)

    # ------------------------------------------------------------------
    # configuration: quotas, features, domains
    # ------------------------------------------------------------------
    def quota(self, domid: int, name: str) -> int:
        return self._domain_quotas.get(domid, {}).get(name, self.quotas[name])

    def set_quota(self, name: str, value: int, domid: Optional[int] = None) -> None:
        if name not in DEFAULT_QUOTAS or value < 0:
            raise XenStoreError("EINVAL", "bad quota %r=%r" % (name, value))
        if domid is None:
            self.quotas[name] = value
        else:
            self._domain_quotas.setdefault(domid, {})[name] = value

    def _limit(self, conn: Connection, name: str) -> int:
        """The limit that applies to ``conn``; 0 means unlimited."""
        return 0 if conn.privileged else self.quota(conn.domid, name)

    def features(self, domid: int) -> int:
        return self._features.get(domid, SUPPORTED_FEATURES)

    def set_features(self, domid: int, features: int) -> None:
        if domid in self._introduced:
            raise XenStoreError("EBUSY", "dom%d already introduced" % domid)
        if features & ~SUPPORTED_FEATURES:
            raise XenStoreError("EINVAL", "unsupported feature bits %#x" % features)
        self._features[domid] = features

    def feature_available(self, conn: Connection, feature: int) -> bool:
        return bool(self.features(conn.domid) & feature)

    def is_domain_introduced(self, domid: int) -> bool:
        return domid in (0, DOMID_SELF) or domid in self._introduced

    def introduce_domain(self, domid: int, mfn: int, port: int) -> None:
        """INTRODUCE: start serving ``domid`` whose ring is frame ``mfn``,
        notified on event channel ``port``.  Calls ``hooks.introduce``; fires
        @introduceDomain the first time.  Re-introducing resets the domain's
        connections (watches, transactions, queued output; ``on_reset``)."""
        with self._operation():
            if domid == 0 or domid >= DOMID_FIRST_RESERVED:
                raise XenStoreError("EINVAL", "cannot introduce dom%d" % domid)
            if port <= 0:
                raise XenStoreError("EINVAL", "bad event channel %d" % port)
            already = domid in self._introduced
            self._call_hook("introduce", domid, mfn, port)
            self._introduced[domid] = (mfn, port)
            log.info("dom%d introduced (mfn %#x, port %d)", domid, mfn, port)
            if already:
                for conn in self.connections(domid):
                    self.reset_connection(conn)
                    if conn.on_reset is not None:
                        self._safe_call(conn.on_reset, conn)
            else:
                self._fire_special("@introduceDomain", domid)

    def release_domain(self, domid: int) -> None:
        """RELEASE: stop serving ``domid``.  Its connections are closed (watches
        and transactions dropped), ``hooks.release`` is called, the nodes it
        owned are removed (unless keep_orphans) and permission entries naming
        it are dropped, then @releaseDomain fires."""
        with self._operation():
            if domid == 0 or domid >= DOMID_FIRST_RESERVED:
                raise XenStoreError("EINVAL", "cannot release dom%d" % domid)
            if domid not in self._introduced:
                raise XenStoreError("ENOENT", "dom%d not introduced" % domid)
            del self._introduced[domid]
            for conn in self.connections(domid):
                self.disconnect(conn)
            try:
                self._call_hook("release", domid)
            except XenStoreError as e:
                log.warning("release hook for dom%d failed: %s", domid, e)
            self._features.pop(domid, None)
            self._domain_quotas.pop(domid, None)
            self._targets.pop(domid, None)
            self._remove_domain_from_tree(domid)
            log.info("dom%d released", domid)
            self._fire_special("@releaseDomain", domid)

    def resume_domain(self, domid: int) -> None:
        """RESUME: nothing to re-arm here (we do not watch domain shutdown)."""
        if domid == 0 or domid >= DOMID_FIRST_RESERVED:
            raise XenStoreError("EINVAL", "cannot resume dom%d" % domid)
        if domid not in self._introduced:
            raise XenStoreError("ENOENT", "dom%d not introduced" % domid)

    def set_target(self, domid: int, target: int) -> None:
        """SET_TARGET: ``domid`` (a device model) acts with ``target``'s rights too."""
        for d in (domid, target):
            if not self.is_domain_introduced(d):
                raise XenStoreError("ENOENT", "dom%d not introduced" % d)
        self._targets[domid] = target

    def _call_hook(self, name: str, *args) -> None:
        func = getattr(self.hooks, name, None)
        if func is None:
            return
        try:
            func(*args)
        except XenStoreError:
            raise
        except Exception:
            log.exception("XenStore %s hook failed for %r", name, args)
            raise XenStoreError("EIO", "%s hook failed" % name)

    # ------------------------------------------------------------------
    # operations, shared by the wire handlers and the dom0 helpers.  ``tx`` is
    # None or a transaction of ``conn``; paths are unvalidated client strings.
    # ------------------------------------------------------------------
    def op_read(self, conn, tx, path: str) -> bytes:
        name = self.canonicalize(conn, path)
        return self._get_checked(conn, tx, name, PERM_READ).value

    def op_directory(self, conn, tx, path: str) -> Node:
        name = self.canonicalize(conn, path)
        return self._get_checked(conn, tx, name, PERM_READ)

    def op_get_perms(self, conn, tx, path: str) -> Tuple[Perm, ...]:
        name = self.canonicalize(conn, path, allow_special=True)
        return self._get_checked(conn, tx, name, PERM_READ).perms

    def op_write(self, conn, tx, path: str, value: bytes) -> None:
        name = self.canonicalize(conn, path)
        node = self._get_or_creatable(conn, tx, name)
        with self._changing(tx, name, _SUBTREE):
            if node is None:
                self._create(conn, tx, name, value)
            else:
                self._check_node_size(conn, len(value), node.childlen)
                self._put(tx, name, node.evolve(value=value))

    def op_mkdir(self, conn, tx, path: str) -> None:
        name = self.canonicalize(conn, path)
        if self._get_or_creatable(conn, tx, name) is None:
            with self._changing(tx, name, _SUBTREE):
                self._create(conn, tx, name, b"")

    def op_rm(self, conn, tx, path: str) -> None:
        name = self.canonicalize(conn, path)
        try:
            self._get_checked(conn, tx, name, PERM_WRITE)
        except XenStoreError as e:
            # Removing what is not there is fine if the parent exists.
            if e.errno == "ENOENT" and self._get(tx, parent_of(name)) is not None:
                return
            raise
        if name == "/":
            raise XenStoreError("EINVAL", "cannot remove /")
        self._remove_subtree(tx, name)

    def op_set_perms(self, conn, tx, path: str, perms: Tuple[Perm, ...]) -> None:
        limit = self._limit(conn, "node-permissions")
        if limit and len(perms) > limit:
            raise XenStoreError("ENOSPC", "more than %d permissions" % limit)
        name = self.canonicalize(conn, path, allow_special=True)
        node = self._get_checked(conn, tx, name, PERM_WRITE | PERM_OWNER)
        if not conn.privileged and perms[0].domid != node.owner:
            raise XenStoreError("EPERM", "only dom0 may change the owner")
        with self._changing(tx, name, _SUBTREE):
            self._put(tx, name, node.evolve(perms=tuple(perms)))

    def op_watch(self, conn, path: str, token: str, depth: int = -1,
                 callback: Optional[Callable[[str, str], None]] = None) -> None:
        """Register a watch; it fires once at once (after the reply, on the wire)."""
        relative = not path.startswith(("/", "@"))
        name = self.canonicalize(conn, path, allow_special=True)
        for w in conn.watches:
            if w.path == name and w.token == token:
                raise XenStoreError("EEXIST", "watch %s %s exists" % (name, token))
        limit = self._limit(conn, "watches")
        if limit and sum(len(c.watches) for c in self.connections(conn.domid)) >= limit:
            raise XenStoreError("ENOSPC", "watch quota reached")
        prefix_len = len(conn.base_path) + 1 if relative else 0
        watch = _Watch(conn, name, token, depth, prefix_len, callback)
        conn.watches.append(watch)
        if callback is not None:
            self._deferred.append((callback, path, token))
        else:
            self._post_reply.append((conn, path, token))

    def op_unwatch(self, conn, path: str, token: str) -> None:
        name = self.canonicalize(conn, path, allow_special=True)
        for w in conn.watches:
            if w.path == name and w.token == token:
                conn.watches.remove(w)
                return
        raise XenStoreError("ENOENT", "no watch %s %s" % (name, token))

    def op_transaction_start(self, conn) -> _Transaction:
        limit = self._limit(conn, "transactions")
        if limit and sum(len(c.transactions) for c in self.connections(conn.domid)) >= limit:
            raise XenStoreError("ENOSPC", "transaction quota reached")
        tx_id = conn._next_tx_id
        while tx_id == 0 or tx_id in conn.transactions:
            tx_id = (tx_id + 1) & 0xFFFFFFFF
        conn._next_tx_id = (tx_id + 1) & 0xFFFFFFFF
        tx = _Transaction(tx_id, conn)
        conn.transactions[tx_id] = tx
        return tx

    def op_transaction_end(self, conn, tx: _Transaction, commit: bool) -> None:
        """End ``tx``; it is gone afterwards whatever happens.  EAGAIN if a node
        it read changed since (the caller retries the whole transaction)."""
        del conn.transactions[tx.id]
        if commit:
            self._commit(tx)

    def lookup_transaction(self, conn, tx_id: int) -> Optional[_Transaction]:
        if tx_id == 0:
            return None
        tx = conn.transactions.get(tx_id)
        if tx is None:
            raise XenStoreError("ENOENT", "no transaction %d" % tx_id)
        return tx

    def reset_watches(self, conn) -> None:
        conn.watches.clear()
        conn.transactions.clear()

    # ------------------------------------------------------------------
    # Python-only helpers
    # ------------------------------------------------------------------
    def watch(self, path: str, token: str, callback: Callable[[str, str], None],
              *, depth: int = -1) -> None:
        """Watch as domain 0: ``callback(path, token)`` runs for every event,
        once right away, after the operation that caused it completes."""
        with self._operation():
            self.op_watch(self._dom0, path, token, depth, callback)

    def unwatch(self, path: str, token: str) -> None:
        with self._operation():
            self.op_unwatch(self._dom0, path, token)

    @contextlib.contextmanager
    def transaction(self):
        """``with store.transaction() as t: t.write(...)``: commits on normal
        exit (XenStoreError EAGAIN on conflict: retry), aborts on exception."""
        with self._operation():
            tx = self.op_transaction_start(self._dom0)
        try:
            yield Dom0Transaction(self, tx)
        except BaseException:
            self._dom0.transactions.pop(tx.id, None)
            raise
        with self._operation():
            self.op_transaction_end(self._dom0, tx, True)

    def tree_dump(self, path: str = "/", *, perms: bool = False) -> List[str]:
        """The tree below ``path`` as ``xenstore-ls`` prints it: one line per
        node, indented one space per level, ``name = "value"`` (values escaped
        like xenstore-ls), with ``  (n0,r5)`` appended when ``perms``."""
        name = self.canonicalize(self._dom0, path)
        top = self._get_checked(self._dom0, None, name, PERM_READ)
        lines: List[str] = []
        stack = [(join_child(name, c), c, 0) for c in reversed(top.children)]
        while stack:
            node_name, child, depth = stack.pop()
            node = self._nodes[node_name]
            line = "%s%s = \"%s\"" % (" " * depth, child, sanitise_value(node.value))
            if perms:
                line += "  (%s)" % ",".join(map(str, node.perms))
            lines.append(line)
            stack.extend((join_child(node_name, c), c, depth + 1)
                         for c in reversed(node.children))
        return lines

    # ------------------------------------------------------------------
    # paths and permissions
    # ------------------------------------------------------------------
    def canonicalize(self, conn, path: str, allow_special: bool = False) -> str:
        """core.c canonicalize(): validate ``path`` and make it absolute
        (relative paths are below /local/domain/<domid>).  EINVAL if bad."""
        if (not isinstance(path, str) or not valid_path_chars(path)
                or (path.startswith("@") and not allow_special)):
            raise XenStoreError("EINVAL", "invalid path %r" % (path,))
        name = path if path.startswith(("/", "@")) else conn.base_path + "/" + path
        check_path_shape(name)
        limit = self._limit(conn, "path-max")
        if limit:
            local = _LOCAL_DOMAIN_PREFIX.match(name)
            if len(name) - (local.end() if local else 0) > limit:
                raise XenStoreError("EINVAL", "path longer than %d" % limit)
        return name

    def _access(self, conn, perms: Tuple[Perm, ...]) -> int:
        return access_bits(perms, conn.domid, privileged=conn.privileged,
                           target=self._targets.get(conn.domid),
                           domid_any=self.feature_available(
                               conn, XENSTORE_SERVER_FEATURE_DOMID_ANY))

    def _get_checked(self, conn, tx, name: str, need: int) -> Node:
        """get_node(): the node if ``conn`` may ``need`` it; ENOENT or EACCES,
        where ENOENT is only told to callers the nearest existing ancestor
        allows ``need`` (errno_from_parents)."""
        node = self._get(tx, name)
        if node is None:
            raise self._error_from_parents(conn, tx, name, "ENOENT", need)
        if self._access(conn, node.perms) & need != need:
            raise XenStoreError("EACCES", name)
        return node

    def _error_from_parents(self, conn, tx, name, errno, need) -> XenStoreError:
        ancestor = name
        while True:
            ancestor = parent_of(ancestor)
            node = self._get(tx, ancestor)
            if node is not None or ancestor == "/":
                break
        if node is not None and self._access(conn, node.perms) & need:
            return XenStoreError(errno, name)
        return XenStoreError("EACCES", name)

    def _get_or_creatable(self, conn, tx, name: str) -> Optional[Node]:
        """For WRITE/MKDIR: the writable node, or None if it may be created."""
        try:
            return self._get_checked(conn, tx, name, PERM_WRITE)
        except XenStoreError as e:
            if e.errno != "ENOENT":
                raise
            return None

    def _check_node_size(self, conn, value_len: int, childlen: int) -> None:
        limit = self._limit(conn, "node-size")
        if limit and value_len + childlen > limit:
            raise XenStoreError("ENOSPC", "node larger than %d bytes" % limit)

    # ------------------------------------------------------------------
    # node storage: the global tree, or a transaction's view of it
    # ------------------------------------------------------------------
    def _get(self, tx, name: str) -> Optional[Node]:
        if tx is None:
            return self._nodes.get(name)
        access = tx.accessed.get(name)
        if access is None:
            access = self._tx_access(tx, name, checked=True)
        return access.node

    def _tx_access(self, tx, name: str, checked: bool) -> _Access:
        limit = self._limit(tx.conn, "transaction-nodes")
        if limit and len(tx.accessed) >= limit:
            raise XenStoreError("ENOSPC", "transaction touches more than %d nodes" % limit)
        access = tx.accessed[name] = _Access(self._nodes.get(name), checked)
        return access

    def _put(self, tx, name: str, node: Node) -> None:
        self._generation += 1
        node = node.evolve(generation=self._generation)
        if tx is None:
            old = self._nodes.get(name)
            if old is not None:
                self._owned[old.owner] -= 1
            self._owned[node.owner] += 1
            self._nodes[name] = node
        else:
            access = tx.accessed.get(name) or self._tx_access(tx, name, checked=False)
            access.node = node
            access.modified = True

    def _delete(self, tx, name: str) -> None:
        if tx is None:
            old = self._nodes.pop(name, None)
            if old is not None:
                self._owned[old.owner] -= 1
        else:
            access = tx.accessed.get(name) or self._tx_access(tx, name, checked=False)
            access.node = None
            access.modified = True

    def _owned_count(self, tx, domid: int) -> int:
        count = self._owned[domid]
        if tx is not None:
            for name, access in tx.accessed.items():
                if access.modified:
                    old = self._nodes.get(name)
                    count -= old is not None and old.owner == domid
                    count += access.node is not None and access.node.owner == domid
        return count

    def _create(self, conn, tx, name: str, value: bytes) -> None:
        """construct_node()/create_node(): ``name`` and its missing parents.
        New nodes inherit the nearest existing ancestor's permissions; an
        unprivileged creator becomes their owner.  All reads happen before the
        first write, so a refused create leaves nothing behind."""
        missing = [name]
        parent = self._get(tx, parent_of(name))
        while parent is None:
            missing.append(parent_of(missing[-1]))
            parent = self._get(tx, parent_of(missing[-1]))
        missing.reverse()                               # top-down
        parent_name = parent_of(missing[0])
        perms = parent.perms
        if not conn.privileged:
            perms = (Perm(perms[0].access, conn.domid),) + perms[1:]
            limit = self._limit(conn, "nodes")
            if limit and self._owned_count(tx, conn.domid) + len(missing) > limit:
                raise XenStoreError("ENOSPC", "node quota reached")
            top = basename_of(missing[0])
            self._check_node_size(conn, len(parent.value),
                                  parent.childlen + len(encode(top)) + 1)
            self._check_node_size(conn, len(value), 0)
        self._put(tx, parent_name, parent.evolve(
            children=parent.children + (basename_of(missing[0]),)))
        for i, node_name in enumerate(missing):
            if i + 1 < len(missing):
                self._put(tx, node_name, Node(b"", perms, (basename_of(missing[i + 1]),)))
            else:
                self._put(tx, node_name, Node(value, perms))

    def _subtree(self, tx, name: str) -> List[str]:
        """``name`` and all its descendants, children before parents."""
        order: List[str] = []
        stack = [name]
        while stack:                    # iterative: paths may be ~1500 levels deep
            node_name = stack.pop()
            node = self._get(tx, node_name)
            if node is not None:
                order.append(node_name)
                stack.extend(join_child(node_name, c) for c in node.children)
        order.reverse()                 # every node came before its descendants
        return order

    def _remove_subtree(self, tx, name: str) -> None:
        doomed = self._subtree(tx, name)                 # every read first
        parent_name = parent_of(name)
        parent = self._get(tx, parent_name)
        base = basename_of(name)
        with self._changing(tx, name, _RM):
            for node_name in doomed:
                self._delete(tx, node_name)
            self._put(tx, parent_name, parent.evolve(
                children=tuple(c for c in parent.children if c != base)))

    def _commit(self, tx: _Transaction) -> None:
        for name, access in tx.accessed.items():
            current = self._nodes.get(name)
            generation = current.generation if current is not None else None
            if access.checked and generation != access.generation:
                raise XenStoreError("EAGAIN", "%s changed during transaction %d"
                                    % (name, tx.id))
        # Others may have created nodes for this domain meanwhile (acc_fix_domains).
        conn = tx.conn
        limit = self._limit(conn, "nodes")
        count = self._owned_count(tx, conn.domid)
        if limit and count > self._owned[conn.domid] and count > limit:
            raise XenStoreError("ENOSPC", "node quota reached at commit")
        pending = self._prepare_events(tx.events.items())
        for name, access in tx.accessed.items():
            if not access.modified:
                continue
            if access.node is None:
                self._delete(None, name)
            else:
                self._put(None, name, access.node)
        self._deliver_events(pending)

    def _remove_domain_from_tree(self, domid: int) -> None:
        """domain_tree_remove(): delete (or hand to dom0) nodes ``domid``
        owned, and drop permission entries naming it, so a later domain reusing
        the id inherits nothing."""
        stack = ["@introduceDomain", "@releaseDomain", "/"]
        while stack:
            name = stack.pop()
            node = self._nodes.get(name)
            if node is None:
                continue
            if node.owner == domid and name != "/":
                if not self.keep_orphans and not name.startswith("@"):
                    self._remove_subtree(None, name)
                    continue
                node = node.evolve(perms=(Perm(node.perms[0].access, 0),) + node.perms[1:])
                self._put(None, name, node)
            kept = tuple(p for p in node.perms[1:] if p.domid != domid)
            if len(kept) != len(node.perms) - 1:
                self._put(None, name, node.evolve(perms=node.perms[:1] + kept))
            stack.extend(join_child(name, c) for c in node.children)

    # ------------------------------------------------------------------
    # watch events
    # ------------------------------------------------------------------
    @contextlib.contextmanager
    def _changing(self, tx, path: str, kind: int):
        """Wrap one change of ``path``: outside a transaction, events fire
        after the change (permissions checked against the node and its parent
        both before and after, as xenstored does); inside one, the event is
        remembered for commit.  Nothing fires if the change raises."""
        if tx is not None:
            yield
            tx.queue_event(path, kind)
            return
        pending = self._prepare_events([(path, kind)])
        yield
        self._deliver_events(pending)

    def _match(self, watch: _Watch, path: str, kind: int) -> Optional[str]:
        """The absolute event path ``watch`` reports for this change, or None."""
        if kind == _NODEPTH:
            return path if path == watch.path and watch.depth < 0 else None
        if kind == _DEPTH:
            hit = path == watch.path or (watch.depth > 0 and is_child(path, watch.path,
                                                                      watch.depth))
            return path if hit else None
        if is_child(path, watch.path, watch.depth):
            return path
        if kind == _RM and is_child(watch.path, path):
            return watch.path        # an ancestor of the watched path went away
        return None

    def _prepare_events(self, changes) -> list:
        pending = []
        perms_before: Dict[str, list] = {}
        for path, kind in changes:
            for conn in self._conns:
                for watch in conn.watches:
                    event = self._match(watch, path, kind)
                    if event is None:
                        continue
                    if event not in perms_before:
                        perms_before[event] = self._perms_near(event)
                    pending.append((watch, event, perms_before[event]))
        return pending

    def _deliver_events(self, pending) -> None:
        perms_after: Dict[str, list] = {}
        for watch, event, before in pending:
            conn = watch.conn
            if conn.closed or watch not in conn.watches:
                continue
            if event not in perms_after:
                perms_after[event] = self._perms_near(event)
            if conn.privileged or any(self._access(conn, p) & PERM_READ
                                      for p in before + perms_after[event]):
                self._send_event(watch, event)

    def _perms_near(self, path: str) -> list:
        """Permissions deciding who sees an event on ``path``: the node's and
        its parent's (watch.c watch_permitted); for "@x/..." the "@x" node's."""
        if path.startswith("@"):
            node = self._nodes.get(path.split("/", 1)[0])
            return [node.perms] if node is not None else []
        found = []
        for name in (path, parent_of(path)):
            node = self._nodes.get(name)
            if node is not None:
                found.append(node.perms)
        return found

    def _fire_special(self, special: str, domid: int) -> None:
        """fire_special_watches(WATCH_BOTH): "@x" and "@x/<domid>"."""
        self._deliver_events(self._prepare_events(
            [(special, _NODEPTH), ("%s/%d" % (special, domid), _DEPTH)]))

    def _send_event(self, watch: _Watch, abs_path: str) -> None:
        path = watch.event_path(abs_path)
        if watch.callback is not None:
            self._deferred.append((watch.callback, path, watch.token))
        else:
            self._queue_event(watch.conn, path, watch.token)

    def _queue_event(self, conn: Connection, path: str, token: str) -> None:
        payload = encode(path) + b"\0" + encode(token) + b"\0"
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            return                                   # as xenstored: never sent
        msg = Message(XsType.WATCH_EVENT, 0, 0, payload)
        if not path.startswith("@") and payload in conn._queued_events:
            return                                   # identical event still pending
        limit = self._limit(conn, "memory")
        if limit and conn._outbox_bytes + XSD_SOCKMSG_SIZE + len(payload) > limit:
            log.warning("dom%d output queue over %d bytes: watch event %s dropped",
                        conn.domid, limit, path)
            return
        conn._push(msg)
        self._kick(conn)

    # ------------------------------------------------------------------
    # deferred work: Python watch callbacks and transport kicks run after the
    # outermost operation, so they always see a consistent store and may call
    # back into it.
    # ------------------------------------------------------------------
    def _kick(self, conn: Connection) -> None:
        self._kicks[conn.id] = conn

    @contextlib.contextmanager
    def _operation(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._flush_post_reply()
                self._run_deferred()

    def _flush_post_reply(self) -> None:
        """Registration events of wire watches go out after the WATCH reply."""
        for conn, path, token in self._post_reply:
            if not conn.closed:
                self._queue_event(conn, path, token)
        self._post_reply.clear()

    def _run_deferred(self) -> None:
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._deferred or self._kicks:
                if self._deferred:
                    callback, path, token = self._deferred.popleft()
                    if self.schedule is not None:
                        self.schedule(self._safe_call, callback, path, token)
                    else:
                        self._safe_call(callback, path, token)
                    continue
                _conn_id, conn = self._kicks.popitem()
                if conn.on_output is not None and not conn.closed:
                    self._safe_call(conn.on_output, conn)
        finally:
            self._flushing = False

    @staticmethod
    def _safe_call(func, *args) -> None:
        try:
            func(*args)
        except Exception:
            log.exception("XenStore callback %r failed", func)

    # ------------------------------------------------------------------
    # introspection (tests, debugging)
    # ------------------------------------------------------------------
    def node(self, path: str) -> Optional[Node]:
        """The committed node at an absolute path, bypassing permissions."""
        return self._nodes.get(path)

    def owned_nodes(self, domid: int) -> int:
        return self._owned[domid]

    @property
    def dom0(self) -> Connection:
        """The in-process privileged connection the helpers use."""
        return self._dom0

