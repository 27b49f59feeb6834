"""Wire requests -> engine operations: payload parsing, replies, the dispatch table.

One handler per message type, ``WIRE_FUNCS`` maps the type number to
(name, handler, flags) as xenstored's ``wire_funcs[]`` does; privilege and the
transaction id are checked in :func:`dispatch`, nowhere else.  Payload syntax
is ``docs/misc/xenstore.txt``; error choices follow C xenstored.
"""

import logging
from typing import Callable, Dict, List, NamedTuple

from .nodes import XenStoreError, decode, encode, format_perms, parse_domid, parse_perms
from .wire import (
    XENSTORE_PAYLOAD_MAX, XENSTORE_SERVER_FEATURE_WATCHDEPTH, Message, XsType,
    type_name,
)

__all__ = ["WIRE_FUNCS", "WireFunc", "dispatch", "error_message"]

log = logging.getLogger("qemu_xenpv.xenstore")

OK = b"OK\0"

FLAG_PRIV = 1      # XS_FLAG_PRIV: privileged connections only (else EACCES)
FLAG_NOTID = 2     # XS_FLAG_NOTID: the header's tx_id is ignored


class WireFunc(NamedTuple):
    name: str
    func: Callable
    flags: int = 0


def error_message(errno: str, req_id: int, tx_id: int) -> Message:
    return Message(XsType.ERROR, req_id, tx_id, errno.encode("ascii") + b"\0")


def dispatch(store, conn, msg_type: int, req_id: int, tx_id: int, payload: bytes) -> Message:
    """The reply to one request (process_message() in core.c).  Never raises."""
    entry = WIRE_FUNCS.get(msg_type)
    if store.trace_io:
        log.info("dom%d IN %s req %d tx %d %r", conn.domid, type_name(msg_type),
                 req_id, tx_id, payload[:64])
    try:
        if entry is None:
            store.log_unknown_once(msg_type, conn)
            raise XenStoreError("ENOSYS", "unknown type %d" % msg_type)
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            raise XenStoreError("E2BIG", "request payload of %d bytes" % len(payload))
        if entry.flags & FLAG_PRIV and not conn.privileged:
            raise XenStoreError("EACCES", "%s needs privilege" % entry.name)
        tx = None if entry.flags & FLAG_NOTID else store.lookup_transaction(conn, tx_id)
        reply = entry.func(store, conn, tx, payload)
        if len(reply) > XENSTORE_PAYLOAD_MAX:
            raise XenStoreError("E2BIG", "reply of %d bytes" % len(reply))
        return Message(XsType(msg_type), req_id, tx_id, reply)
    except XenStoreError as e:
        log.debug("dom%d %s -> %s", conn.domid, type_name(msg_type), e)
        return error_message(e.errno, req_id, tx_id)
    except Exception:
        # A bug of ours must not take the transport down.
        log.exception("XenStore %s from dom%d failed", type_name(msg_type), conn.domid)
        return error_message("EIO", req_id, tx_id)


# ---- payload parsing -------------------------------------------------------
def strings(payload: bytes) -> List[str]:
    """get_strings(): every NUL-terminated string; a tail without NUL is ignored."""
    return [decode(p) for p in payload.split(b"\0")[:-1]]


def onearg(payload: bytes) -> str:
    """onearg(): exactly one string, NUL-terminated, nothing after it."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        raise XenStoreError("EINVAL", "expected one NUL-terminated argument")
    return decode(payload[:-1])


def number(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise XenStoreError("EINVAL", "not a decimal number: %r" % text)
    return int(text)


def reply_string(text: str) -> bytes:
    return encode(text) + b"\0"


# ---- database ----------------------------------------------------------------
def do_read(store, conn, tx, payload):
    return store.op_read(conn, tx, onearg(payload))


def do_write(store, conn, tx, payload):
    if b"\0" not in payload:
        raise XenStoreError("EINVAL", "WRITE without path")
    path, value = payload.split(b"\0", 1)
    store.op_write(conn, tx, decode(path), value)
    return OK


def do_mkdir(store, conn, tx, payload):
    store.op_mkdir(conn, tx, onearg(payload))
    return OK


def do_rm(store, conn, tx, payload):
    store.op_rm(conn, tx, onearg(payload))
    return OK


def do_directory(store, conn, tx, payload):
    return store.op_directory(conn, tx, onearg(payload)).children_bytes


def do_directory_part(store, conn, tx, payload):
    """<path>|<offset>| -> <gencnt>|<child>|*, with an extra NUL once the list
    is complete (send_directory_part() in core.c)."""
    args = strings(payload)
    if len(args) != 2 or payload.count(b"\0") != 2:
        raise XenStoreError("EINVAL", "DIRECTORY_PART wants <path>|<offset>|")
    node = store.op_directory(conn, tx, args[0])
    offset = number(args[1])
    children = node.children_bytes
    gen = b"%d\0" % node.generation
    if offset >= len(children):
        return gen + b"\0"
    limit = XENSTORE_PAYLOAD_MAX - len(gen) - 1
    end = offset
    while True:
        name_end = children.index(b"\0", end)
        if (end - offset) + (name_end - end) >= limit:
            break
        end = name_end + 1
        if end == len(children):
            break
    chunk = gen + children[offset:end]
    return chunk + b"\0" if end == len(children) else chunk


def do_get_perms(store, conn, tx, payload):
    return format_perms(store.op_get_perms(conn, tx, onearg(payload)))


def do_set_perms(store, conn, tx, payload):
    args = strings(payload)
    if len(args) < 2:
        raise XenStoreError("EINVAL", "SET_PERMS wants <path>|<perm>|+")
    store.op_set_perms(conn, tx, args[0], parse_perms(args[1:]))
    return OK


# ---- watches -------------------------------------------------------------------
def do_watch(store, conn, tx, payload):
    args = strings(payload)
    depth = -1
    if len(args) == 3 and store.feature_available(conn, XENSTORE_SERVER_FEATURE_WATCHDEPTH):
        depth = number(args[2])
    elif len(args) != 2:
        raise XenStoreError("EINVAL", "WATCH wants <path>|<token>|[<depth>|]")
    store.op_watch(conn, args[0], args[1], depth)
    return OK


def do_unwatch(store, conn, tx, payload):
    args = strings(payload)
    if len(args) != 2:
        raise XenStoreError("EINVAL", "UNWATCH wants <path>|<token>|")
    store.op_unwatch(conn, args[0], args[1])
    return OK


def do_reset_watches(store, conn, tx, payload):
    store.reset_watches(conn)
    return OK


# ---- transactions --------------------------------------------------------------
def do_transaction_start(store, conn, tx, payload):
    if tx is not None:
        raise XenStoreError("EBUSY", "nested transaction")
    return reply_string(str(store.op_transaction_start(conn).id))


def do_transaction_end(store, conn, tx, payload):
    arg = onearg(payload)
    if arg not in ("T", "F"):
        raise XenStoreError("EINVAL", "TRANSACTION_END wants T or F")
    if tx is None:
        raise XenStoreError("ENOENT", "no transaction")
    store.op_transaction_end(conn, tx, arg == "T")
    return OK


# ---- domains -------------------------------------------------------------------
def do_introduce(store, conn, tx, payload):
    args = strings(payload)
    if len(args) < 3:
        raise XenStoreError("EINVAL", "INTRODUCE wants <domid>|<gfn>|<evtchn>|")
    domid = parse_domid(args[0])
    mfn = _signed_frame(args[1])
    port = number(args[2]) if args[2].isdigit() else 0
    store.introduce_domain(domid, mfn, port)
    return OK


def _signed_frame(text: str) -> int:
    """<gfn> is "signed decimal (!)": -1 means 0xffffffff."""
    digits = text[1:] if text.startswith("-") else text
    value = number(digits) if digits.isascii() and digits.isdigit() else None
    if value is None or text.startswith("-") and value > (1 << 31) or value >= (1 << 32):
        raise XenStoreError("EINVAL", "bad frame number %r" % text)
    return (-value if text.startswith("-") else value) & 0xFFFFFFFF


def do_release(store, conn, tx, payload):
    store.release_domain(parse_domid(onearg(payload)))
    return OK


def do_resume(store, conn, tx, payload):
    store.resume_domain(parse_domid(onearg(payload)))
    return OK


def do_set_target(store, conn, tx, payload):
    args = strings(payload)
    if len(args) < 2:
        raise XenStoreError("EINVAL", "SET_TARGET wants <domid>|<tdomid>|")
    store.set_target(parse_domid(args[0]), parse_domid(args[1]))
    return OK


def do_get_domain_path(store, conn, tx, payload):
    domid = parse_domid(onearg(payload))
    return reply_string(store.domain_path(domid))


def do_is_domain_introduced(store, conn, tx, payload):
    domid = parse_domid(onearg(payload))
    return b"T\0" if store.is_domain_introduced(domid) else b"F\0"


# ---- features and quotas -----------------------------------------------------------
def do_get_feature(store, conn, tx, payload):
    args = strings(payload)
    if not args:
        return reply_string(str(store.features(conn.domid)))
    if not conn.privileged:
        raise XenStoreError("EACCES", "GET_FEATURE of another domain")
    if len(args) > 1:
        raise XenStoreError("EINVAL", "GET_FEATURE wants [<domid>|]")
    return reply_string(str(store.features(parse_domid(args[0]))))


def do_set_feature(store, conn, tx, payload):
    args = strings(payload)
    if len(args) != 2:
        raise XenStoreError("EINVAL", "SET_FEATURE wants <domid>|<value>|")
    store.set_features(parse_domid(args[0]), number(args[1]))
    return OK


def do_get_quota(store, conn, tx, payload):
    args = strings(payload)
    if not args:
        return reply_string(" ".join(store.quotas))
    if len(args) > 2:
        raise XenStoreError("EINVAL", "GET_QUOTA wants [[<domid>|]<quota>|]")
    name = args[-1]
    if name not in store.quotas:
        raise XenStoreError("EINVAL", "unknown quota %r" % name)
    if len(args) == 1:
        return reply_string(str(store.quotas[name]))
    return reply_string(str(store.quota(parse_domid(args[0]), name)))


def do_set_quota(store, conn, tx, payload):
    args = strings(payload)
    if len(args) not in (2, 3):
        raise XenStoreError("EINVAL", "SET_QUOTA wants [<domid>|]<quota>|<value>|")
    domid = parse_domid(args[0]) if len(args) == 3 else None
    store.set_quota(args[-2], number(args[-1]), domid)
    return OK


# ---- CONTROL ---------------------------------------------------------------------------
def _control_check(store, conn, params):
    if params:
        raise XenStoreError("EINVAL", "check takes no parameter")
    return OK


def _control_log(store, conn, params):
    if not params:
        return reply_string("Log switch settings:\n%-8s: %s\n"
                            % ("io", "on" if store.trace_io else "off"))
    if len(params) != 1 or params[0] not in ("on", "off", "+io", "-io"):
        raise XenStoreError("EINVAL", "log [on|off|+io|-io]")
    store.trace_io = params[0] in ("on", "+io")
    return OK


def _control_print(store, conn, params):
    if len(params) != 1:
        raise XenStoreError("EINVAL", "print <string>")
    log.info("control: %s", params[0])
    return OK


def _control_quota(store, conn, params):
    if not params:
        return reply_string("Quota settings:\n" + "".join(
            "%-17s: %8d\n" % (name, value) for name, value in store.quotas.items()))
    if params[0] == "set" and len(params) == 3:
        value = number(params[2])
        if value < 1:
            raise XenStoreError("EINVAL", "quota must be positive")
        store.set_quota(params[1], value)
        return OK
    raise XenStoreError("EINVAL", "quota [set <name> <val>]")


def _control_help(store, conn, params):
    if params:
        raise XenStoreError("EINVAL", "help takes no parameter")
    return reply_string("".join("%-15s %s\n" % (name, usage)
                                for name, (_func, usage) in CONTROL_COMMANDS.items()))


CONTROL_COMMANDS: Dict[str, tuple] = {
    "check": (_control_check, ""),
    "log": (_control_log, "[on|off|+io|-io]"),
    "print": (_control_print, "<string>"),
    "quota": (_control_quota, "[set <name> <val>]"),
    "help": (_control_help, ""),
}


def do_control(store, conn, tx, payload):
    args = strings(payload)
    if not args or args[0] not in CONTROL_COMMANDS:
        raise XenStoreError("EINVAL", "unknown CONTROL command")
    func, _usage = CONTROL_COMMANDS[args[0]]
    return func(store, conn, args[1:])


WIRE_FUNCS: Dict[int, WireFunc] = {
    XsType.CONTROL: WireFunc("CONTROL", do_control, FLAG_PRIV),
    XsType.DIRECTORY: WireFunc("DIRECTORY", do_directory),
    XsType.READ: WireFunc("READ", do_read),
    XsType.GET_PERMS: WireFunc("GET_PERMS", do_get_perms),
    XsType.WATCH: WireFunc("WATCH", do_watch, FLAG_NOTID),
    XsType.UNWATCH: WireFunc("UNWATCH", do_unwatch, FLAG_NOTID),
    XsType.TRANSACTION_START: WireFunc("TRANSACTION_START", do_transaction_start),
    XsType.TRANSACTION_END: WireFunc("TRANSACTION_END", do_transaction_end),
    XsType.INTRODUCE: WireFunc("INTRODUCE", do_introduce, FLAG_PRIV),
    XsType.RELEASE: WireFunc("RELEASE", do_release, FLAG_PRIV),
    XsType.GET_DOMAIN_PATH: WireFunc("GET_DOMAIN_PATH", do_get_domain_path),
    XsType.WRITE: WireFunc("WRITE", do_write),
    XsType.MKDIR: WireFunc("MKDIR", do_mkdir),
    XsType.RM: WireFunc("RM", do_rm),
    XsType.SET_PERMS: WireFunc("SET_PERMS", do_set_perms),
    XsType.IS_DOMAIN_INTRODUCED: WireFunc("IS_DOMAIN_INTRODUCED", do_is_domain_introduced,
                                          FLAG_PRIV),
    XsType.RESUME: WireFunc("RESUME", do_resume, FLAG_PRIV),
    XsType.SET_TARGET: WireFunc("SET_TARGET", do_set_target, FLAG_PRIV),
    XsType.RESET_WATCHES: WireFunc("RESET_WATCHES", do_reset_watches),
    XsType.DIRECTORY_PART: WireFunc("DIRECTORY_PART", do_directory_part),
    XsType.GET_FEATURE: WireFunc("GET_FEATURE", do_get_feature),
    XsType.SET_FEATURE: WireFunc("SET_FEATURE", do_set_feature, FLAG_PRIV),
    XsType.GET_QUOTA: WireFunc("GET_QUOTA", do_get_quota, FLAG_PRIV),
    XsType.SET_QUOTA: WireFunc("SET_QUOTA", do_set_quota, FLAG_PRIV),
}
# WATCH_EVENT and ERROR are replies only: a client sending them gets ENOSYS.


def support_matrix() -> List[str]:
    """Names of the supported request types, for docs and --trace output."""
    return [entry.name for _num, entry in sorted(WIRE_FUNCS.items())]
