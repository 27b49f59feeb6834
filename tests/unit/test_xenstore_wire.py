"""The xs_wire.h ABI: numbers, sizes and offsets must match Xen byte for byte."""

import struct

import pytest

from qemu_xenpv.xenstore import wire
from qemu_xenpv.xenstore.wire import XsType


def test_message_type_numbers():
    expected = {
        "CONTROL": 0, "DIRECTORY": 1, "READ": 2, "GET_PERMS": 3, "WATCH": 4,
        "UNWATCH": 5, "TRANSACTION_START": 6, "TRANSACTION_END": 7, "INTRODUCE": 8,
        "RELEASE": 9, "GET_DOMAIN_PATH": 10, "WRITE": 11, "MKDIR": 12, "RM": 13,
        "SET_PERMS": 14, "WATCH_EVENT": 15, "ERROR": 16, "IS_DOMAIN_INTRODUCED": 17,
        "RESUME": 18, "SET_TARGET": 19, "RESET_WATCHES": 21, "DIRECTORY_PART": 22,
        "GET_FEATURE": 23, "SET_FEATURE": 24, "GET_QUOTA": 25, "SET_QUOTA": 26,
    }
    assert {t.name: int(t) for t in XsType} == expected
    assert XsType.DEBUG is XsType.CONTROL
    assert 20 not in {int(t) for t in XsType}          # XS_RESTRICT was removed
    assert wire.XS_TYPE_COUNT == 27
    assert wire.XS_INVALID == 0xFFFF
    assert wire.type_name(2) == "READ"
    assert wire.type_name(0) == "CONTROL"
    assert wire.type_name(20) == "**UNKNOWN**"


def test_error_table_order_is_xens():
    assert wire.XSD_ERRORS == (
        "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
        "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM")


def test_limits():
    assert wire.XENSTORE_PAYLOAD_MAX == 4096
    assert wire.XENSTORE_ABS_PATH_MAX == 3072
    assert wire.XENSTORE_REL_PATH_MAX == 2048
    assert wire.XENSTORE_RING_SIZE == 1024


def test_header_is_16_bytes_little_endian():
    assert wire.XSD_SOCKMSG.size == wire.XSD_SOCKMSG_SIZE == 16
    packed = wire.pack_message(XsType.READ, 0x01020304, 7, b"a\0")
    assert packed == struct.pack("<IIII", 2, 0x01020304, 7, 2) + b"a\0"
    assert packed[:4] == b"\x02\x00\x00\x00"


def test_domain_interface_layout():
    offsets = {name: (off, size) for name, off, size in wire.INTERFACE_FIELDS}
    assert offsets == {
        "req": (0, 1024), "rsp": (1024, 1024), "req_cons": (2048, 4),
        "req_prod": (2052, 4), "rsp_cons": (2056, 4), "rsp_prod": (2060, 4),
        "server_features": (2064, 4), "connection": (2068, 4), "error": (2072, 4),
        "evtchn_port": (2076, 4),
    }
    # Fields are contiguous, in declaration order, and fill 2080 bytes of the page.
    end = 0
    for _name, off, size in wire.INTERFACE_FIELDS:
        assert off == end
        end = off + size
    assert end == wire.XENSTORE_INTERFACE_SIZE == 2080
    assert wire.XENSTORE_PAGE_SIZE == 4096
    assert (wire.REQ_OFFSET, wire.RSP_OFFSET, wire.REQ_CONS_OFFSET, wire.REQ_PROD_OFFSET,
            wire.RSP_CONS_OFFSET, wire.RSP_PROD_OFFSET, wire.SERVER_FEATURES_OFFSET,
            wire.CONNECTION_OFFSET, wire.ERROR_OFFSET, wire.EVTCHN_PORT_OFFSET) == (
        0, 1024, 2048, 2052, 2056, 2060, 2064, 2068, 2072, 2076)


def test_feature_connection_and_error_values():
    assert (wire.XENSTORE_SERVER_FEATURE_RECONNECTION, wire.XENSTORE_SERVER_FEATURE_ERROR,
            wire.XENSTORE_SERVER_FEATURE_WATCHDEPTH,
            wire.XENSTORE_SERVER_FEATURE_DOMID_ANY) == (1, 2, 4, 8)
    assert (wire.XENSTORE_CONNECTED, wire.XENSTORE_RECONNECT) == (0, 1)
    assert (wire.XENSTORE_ERROR_NONE, wire.XENSTORE_ERROR_COMM,
            wire.XENSTORE_ERROR_RINGIDX, wire.XENSTORE_ERROR_PROTO) == (0, 1, 2, 3)
    assert (wire.DOMID_SELF, wire.DOMID_ANY) == (0x7FF0, 0x7FF5)


def test_mask_index_is_modulo_ring():
    assert wire.mask_xenstore_idx(0) == 0
    assert wire.mask_xenstore_idx(1023) == 1023
    assert wire.mask_xenstore_idx(1024) == 0
    assert wire.mask_xenstore_idx(0xFFFFFFFF) == 1023


def test_pack_unpack_round_trip():
    msg = wire.Message(XsType.WRITE, 9, 3, b"path\0val\0ue")
    assert wire.unpack_message(msg.pack()) == msg
    assert wire.unpack_header(msg.pack()) == (11, 9, 3, 11)


@pytest.mark.parametrize("data", [
    b"\x01\x00",                                              # short header
    struct.pack("<IIII", 2, 0, 0, 5) + b"abc",                # short payload
    struct.pack("<IIII", 2, 0, 0, 1) + b"ab",                 # trailing bytes
    struct.pack("<IIII", 2, 0, 0, 4097) + b"x" * 4097,        # over the limit
])
def test_unpack_rejects_malformed(data):
    with pytest.raises(ValueError):
        wire.unpack_message(data)


def test_pack_rejects_oversized_payload():
    with pytest.raises(ValueError):
        wire.pack_message(XsType.READ, 0, 0, b"x" * 4097)
    assert len(wire.pack_message(XsType.READ, 0, 0, b"x" * 4096)) == 16 + 4096
