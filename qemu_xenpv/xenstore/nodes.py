"""Nodes, permissions and paths: the pure data rules of the store.

Semantics follow ``docs/misc/xenstore.txt`` and C xenstored
(``tools/xenstored/core.c``: ``canonicalize``, ``perm_for_conn``,
``xenstore_strings_to_perms``).  Nothing here knows about connections,
transactions or transports.
"""

import re
from typing import Iterable, NamedTuple, Optional, Tuple

from .wire import XSD_ERRORS, DOMID_ANY, DOMID_MAX, XENSTORE_ABS_PATH_MAX

__all__ = [
    "XenStoreError", "Perm", "Node", "PERM_READ", "PERM_WRITE", "PERM_OWNER",
    "parse_perm", "parse_perms", "format_perms", "parse_domid",
    "valid_path_chars", "check_path_shape", "access_bits", "parent_of", "basename_of", "join_child",
    "is_child", "sanitise_value", "encode", "decode",
]


class XenStoreError(Exception):
    """An operation failed with one of the wire error names (``XSD_ERRORS``)."""

    def __init__(self, errno: str, detail: str = ""):
        if errno not in XSD_ERRORS:
            raise ValueError("not a XenStore error name: %r" % errno)
        super().__init__("%s: %s" % (errno, detail) if detail else errno)
        self.errno = errno


def encode(text) -> bytes:
    """str -> bytes for the wire; bytes pass through.  Round-trips :func:`decode`."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    """Wire bytes -> str without ever failing (undecodable bytes are preserved)."""
    return bytes(data).decode("utf-8", "surrogateescape")


# Access bits as perm_for_conn() computes them.
PERM_READ = 1
PERM_WRITE = 2
PERM_OWNER = 4
_ACCESS_BITS = {"n": 0, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}


class Perm(NamedTuple):
    """One permission entry, ``<letter><domid>`` on the wire ("r5", "b0")."""

    access: str      # 'n', 'r', 'w' or 'b'
    domid: int

    def __str__(self) -> str:
        return "%s%d" % (self.access, self.domid)

    @property
    def bits(self) -> int:
        return _ACCESS_BITS[self.access]


def parse_domid(text: str) -> int:
    """A decimal domid 0..65535, as xenstored's parse_domid(); EINVAL otherwise."""
    if not text.isdigit() or not text.isascii() or int(text) > DOMID_MAX:
        raise XenStoreError("EINVAL", "bad domid %r" % text)
    return int(text)


def parse_perm(entry) -> Perm:
    """``"r5"`` -> Perm('r', 5); a Perm passes through.  EINVAL if malformed."""
    if isinstance(entry, Perm):
        return entry
    if isinstance(entry, (bytes, bytearray)):
        entry = decode(entry)
    if not isinstance(entry, str) or len(entry) < 2 or entry[0] not in _ACCESS_BITS:
        raise XenStoreError("EINVAL", "bad permission %r" % (entry,))
    return Perm(entry[0], parse_domid(entry[1:]))


def parse_perms(entries: Iterable) -> Tuple[Perm, ...]:
    perms = tuple(parse_perm(e) for e in entries)
    if not perms:
        raise XenStoreError("EINVAL", "empty permission list")
    return perms


def format_perms(perms: Iterable[Perm]) -> bytes:
    """GET_PERMS reply payload: every entry followed by NUL."""
    return b"".join(str(p).encode("ascii") + b"\0" for p in perms)


class Node:
    """One stored node.  Treated as immutable: changes build a new Node, so a
    transaction can hold the same object as the global store without copying."""

    __slots__ = ("value", "perms", "children", "generation")

    def __init__(self, value: bytes, perms: Tuple[Perm, ...],
                 children: Tuple[str, ...] = (), generation: int = 0):
        self.value = value
        self.perms = perms
        self.children = children      # leaf names, insertion order (as C xenstored)
        self.generation = generation  # stamped by the store on every write

    def evolve(self, **changes) -> "Node":
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Node(**fields)

    @property
    def owner(self) -> int:
        return self.perms[0].domid

    @property
    def children_bytes(self) -> bytes:
        """The child list as stored and sent: every name followed by NUL."""
        return b"".join(encode(c) + b"\0" for c in self.children)

    @property
    def childlen(self) -> int:
        return sum(len(encode(c)) + 1 for c in self.children)

    def __repr__(self) -> str:
        return "Node(%r, %s, children=%r, gen=%d)" % (
            self.value, ",".join(map(str, self.perms)), self.children, self.generation)


# Characters xenstored accepts in a path ("valid_chars" in core.c).
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-/_@]*\Z")


def valid_path_chars(path: str) -> bool:
    return bool(_PATH_CHARS.match(path))


def check_path_shape(name: str) -> None:
    """Reject a trailing slash (except "/"), a doubled slash, an over-long path."""
    if (name.endswith("/") and name != "/") or "//" in name:
        raise XenStoreError("EINVAL", "malformed path %r" % name)
    if len(name) > XENSTORE_ABS_PATH_MAX:
        raise XenStoreError("EINVAL", "path longer than XENSTORE_ABS_PATH_MAX")


def parent_of(name: str) -> str:
    """get_parent(): "/a/b" -> "/a", "/a" -> "/", "@releaseDomain" -> "/"."""
    slash = name.rfind("/", 1)
    return name[:slash] if slash > 0 else "/"


def basename_of(name: str) -> str:
    return name[name.rfind("/") + 1:]


def join_child(parent: str, child: str) -> str:
    return "/" + child if parent == "/" else parent + "/" + child


def is_child(child: str, parent: str, depth: int = -1) -> bool:
    """Is ``child`` ``parent`` itself or below it, at most ``depth`` levels
    down (``depth`` < 0: unlimited)?  "/" is the parent of every "/..." path but
    not of the special "@..." paths (watch.c is_child)."""
    if parent == "/":
        if not child.startswith("/"):
            return False
        rest = child[1:]
        levels = rest.count("/") + 1 if rest else 0
    elif child == parent:
        return True
    elif child.startswith(parent + "/"):
        levels = child[len(parent) + 1:].count("/") + 1
    else:
        return False
    return depth < 0 or levels <= depth


def sanitise_value(value: bytes) -> str:
    """A value printed as xenstore-ls prints it (xenstore_client.c sanitise_value)."""
    out = []
    for c in value:
        if 0x20 <= c <= 0x7E and c != 0x5C:
            out.append(chr(c))
        elif c == 0x09:
            out.append("\\t")
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x0D:
            out.append("\\r")
        elif c == 0x5C:
            out.append("\\\\")
        elif c < 0o10:
            out.append("\\%03o" % c)
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def access_bits(perms: Tuple[Perm, ...], domid: int, *, privileged: bool,
                target: Optional[int] = None, domid_any: bool = True) -> int:
    """perm_for_conn(): what ``domid`` may do to a node with these ``perms``.

    The owner (first entry) and privileged callers get everything; otherwise the
    first later entry naming the caller decides, else the owner entry's access
    is the default for everyone.  ``target`` (SET_TARGET) acts as a second
    identity; ``DOMID_ANY`` matches every domain when that feature is on.
    """
    def matches(p: Perm) -> bool:
        return (p.domid == domid or (target is not None and p.domid == target)
                or (domid_any and p.domid == DOMID_ANY))

    if privileged or matches(perms[0]):
        return PERM_READ | PERM_WRITE | PERM_OWNER
    for p in perms[1:]:
        if matches(p):
            return p.bits
    return perms[0].bits
