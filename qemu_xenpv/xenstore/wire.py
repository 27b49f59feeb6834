"""The XenStore wire ABI, declared once (``xen/include/public/io/xs_wire.h``).

Everything byte-level about XenStore lives here: message type numbers, the
16-byte ``xsd_sockmsg`` header, the error-name table, the size limits, and the
layout of ``struct xenstore_domain_interface`` (the shared ring page; see also
``docs/misc/xenstore-ring.txt``).  The engine and the transports import these
names instead of repeating numbers.
"""

import enum
import struct
from typing import NamedTuple, Tuple

__all__ = [
    "XsType", "XS_TYPE_COUNT", "XS_INVALID", "XSD_ERRORS",
    "XSD_SOCKMSG", "XSD_SOCKMSG_SIZE",
    "XENSTORE_PAYLOAD_MAX", "XENSTORE_ABS_PATH_MAX", "XENSTORE_REL_PATH_MAX",
    "XENSTORE_RING_SIZE", "XENSTORE_RING_IDX_MASK", "mask_xenstore_idx",
    "XENSTORE_PAGE_SIZE", "XENSTORE_INTERFACE_SIZE", "INTERFACE_FIELDS",
    "REQ_OFFSET", "RSP_OFFSET", "REQ_CONS_OFFSET", "REQ_PROD_OFFSET",
    "RSP_CONS_OFFSET", "RSP_PROD_OFFSET", "SERVER_FEATURES_OFFSET",
    "CONNECTION_OFFSET", "ERROR_OFFSET", "EVTCHN_PORT_OFFSET",
    "XENSTORE_SERVER_FEATURE_RECONNECTION", "XENSTORE_SERVER_FEATURE_ERROR",
    "XENSTORE_SERVER_FEATURE_WATCHDEPTH", "XENSTORE_SERVER_FEATURE_DOMID_ANY",
    "XENSTORE_CONNECTED", "XENSTORE_RECONNECT",
    "XENSTORE_ERROR_NONE", "XENSTORE_ERROR_COMM", "XENSTORE_ERROR_RINGIDX",
    "XENSTORE_ERROR_PROTO",
    "DOMID_FIRST_RESERVED", "DOMID_SELF", "DOMID_ANY", "DOMID_MAX",
    "Message", "pack_message", "unpack_header", "unpack_message",
    "type_name",
]


class XsType(enum.IntEnum):
    """``enum xsd_sockmsg_type``.  20 (XS_RESTRICT) was removed and is invalid."""

    CONTROL = 0
    DEBUG = 0                      # deprecated alias of CONTROL
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15               # only in replies
    ERROR = 16                     # only in replies
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21             # XS_SET_TARGET + 2
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26


XS_TYPE_COUNT = 27
XS_INVALID = 0xFFFF                # guaranteed to remain invalid


def type_name(msg_type: int) -> str:
    """Name of a message type for logs ("READ"), or "**UNKNOWN**" as xenstored says."""
    try:
        return XsType(msg_type).name
    except ValueError:
        return "**UNKNOWN**"


# ``xsd_errors[]``: errors travel as the errno *name* plus NUL.  New errors are
# only ever appended, so the order is ABI.
XSD_ERRORS: Tuple[str, ...] = (
    "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC",
    "EIO", "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN",
    "E2BIG", "EPERM",
)

# struct xsd_sockmsg { uint32_t type, req_id, tx_id, len; } -- little endian on x86.
XSD_SOCKMSG = struct.Struct("<IIII")
XSD_SOCKMSG_SIZE = 16
assert XSD_SOCKMSG.size == XSD_SOCKMSG_SIZE

# "Violating this is very bad" (the connection is killed); both directions.
XENSTORE_PAYLOAD_MAX = 4096
# "Violating these just gets you an error back."
XENSTORE_ABS_PATH_MAX = 3072
XENSTORE_REL_PATH_MAX = 2048

# ---- struct xenstore_domain_interface (one 4 KiB page, 2080 bytes used) ----
XENSTORE_RING_SIZE = 1024
XENSTORE_RING_IDX_MASK = 0xFFFFFFFF          # XENSTORE_RING_IDX is a free-running u32


def mask_xenstore_idx(idx: int) -> int:
    """MASK_XENSTORE_IDX(idx): position of stream offset ``idx`` inside a ring."""
    return idx & (XENSTORE_RING_SIZE - 1)


XENSTORE_PAGE_SIZE = 4096

# (name, offset, size), in declaration order.
INTERFACE_FIELDS: Tuple[Tuple[str, int, int], ...] = (
    ("req", 0, XENSTORE_RING_SIZE),
    ("rsp", 1024, XENSTORE_RING_SIZE),
    ("req_cons", 2048, 4),
    ("req_prod", 2052, 4),
    ("rsp_cons", 2056, 4),
    ("rsp_prod", 2060, 4),
    ("server_features", 2064, 4),
    ("connection", 2068, 4),
    ("error", 2072, 4),
    ("evtchn_port", 2076, 4),
)
_OFF = {name: off for name, off, _size in INTERFACE_FIELDS}
REQ_OFFSET = _OFF["req"]
RSP_OFFSET = _OFF["rsp"]
REQ_CONS_OFFSET = _OFF["req_cons"]
REQ_PROD_OFFSET = _OFF["req_prod"]
RSP_CONS_OFFSET = _OFF["rsp_cons"]
RSP_PROD_OFFSET = _OFF["rsp_prod"]
SERVER_FEATURES_OFFSET = _OFF["server_features"]
CONNECTION_OFFSET = _OFF["connection"]
ERROR_OFFSET = _OFF["error"]
EVTCHN_PORT_OFFSET = _OFF["evtchn_port"]
XENSTORE_INTERFACE_SIZE = 2080
assert EVTCHN_PORT_OFFSET + 4 == XENSTORE_INTERFACE_SIZE <= XENSTORE_PAGE_SIZE

# Server feature bits (server_features field, GET_FEATURE/SET_FEATURE).
XENSTORE_SERVER_FEATURE_RECONNECTION = 1
XENSTORE_SERVER_FEATURE_ERROR = 2
XENSTORE_SERVER_FEATURE_WATCHDEPTH = 4
XENSTORE_SERVER_FEATURE_DOMID_ANY = 8

# connection field
XENSTORE_CONNECTED = 0
XENSTORE_RECONNECT = 1

# error field
XENSTORE_ERROR_NONE = 0
XENSTORE_ERROR_COMM = 1
XENSTORE_ERROR_RINGIDX = 2
XENSTORE_ERROR_PROTO = 3

# Domain ids (xen.h) that XenStore interprets.
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_ANY = 0x7FF5
DOMID_MAX = 0xFFFF                 # "<domid>: decimal 0..65535"


class Message(NamedTuple):
    """One XenStore message: header fields plus the raw payload bytes."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes

    def pack(self) -> bytes:
        return pack_message(self.type, self.req_id, self.tx_id, self.payload)


def pack_message(msg_type: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Header + payload as it travels on a ring or socket."""
    if len(payload) > XENSTORE_PAYLOAD_MAX:
        raise ValueError("XenStore payload of %d bytes exceeds XENSTORE_PAYLOAD_MAX"
                         % len(payload))
    return XSD_SOCKMSG.pack(msg_type, req_id, tx_id, len(payload)) + bytes(payload)


def unpack_header(data) -> Tuple[int, int, int, int]:
    """(type, req_id, tx_id, len) from the first 16 bytes of ``data``."""
    if len(data) < XSD_SOCKMSG_SIZE:
        raise ValueError("short XenStore header: %d bytes" % len(data))
    return XSD_SOCKMSG.unpack_from(data, 0)


def unpack_message(data) -> Message:
    """Decode exactly one complete message; ValueError if malformed."""
    msg_type, req_id, tx_id, length = unpack_header(data)
    if length > XENSTORE_PAYLOAD_MAX:
        raise ValueError("XenStore payload length %d exceeds XENSTORE_PAYLOAD_MAX" % length)
    if len(data) != XSD_SOCKMSG_SIZE + length:
        raise ValueError("XenStore message is %d bytes, header says %d"
                         % (len(data), XSD_SOCKMSG_SIZE + length))
    return Message(msg_type, req_id, tx_id, bytes(data[XSD_SOCKMSG_SIZE:]))
