"""xen_version: which Xen this is, and what it offers."""

from .. import abi
from ..abi import EPERM, ENOSYS
from . import hypercall

XEN_MAJOR, XEN_MINOR = 4, 17
XEN_EXTRAVERSION = b".0-qemu-xenpv"
XEN_CHANGESET = b"qemu-xenpv"
COMPILE_INFO = (b"qemu-xenpv (Python)".ljust(64, b"\0") + b"qemu-xenpv".ljust(16, b"\0") +
                b"localdomain".ljust(32, b"\0") + b"".ljust(32, b"\0"))


def _cstr(s: bytes, size: int) -> bytes:
    return s[:size - 1].ljust(size, b"\0")


@hypercall("xen_version", 2, {
    abi.XENVER_version: "version", abi.XENVER_extraversion: "extraversion",
    abi.XENVER_compile_info: "compile_info", abi.XENVER_capabilities: "capabilities",
    abi.XENVER_changeset: "changeset", abi.XENVER_platform_parameters: "platform_parameters",
    abi.XENVER_get_features: "get_features", abi.XENVER_pagesize: "pagesize",
    abi.XENVER_guest_handle: "guest_handle", abi.XENVER_commandline: "commandline",
    abi.XENVER_build_id: "build_id"})
def xen_version(call, cmd, arg):
    dom = call.dom
    if cmd == abi.XENVER_version:
        return (XEN_MAJOR << 16) | XEN_MINOR
    if cmd == abi.XENVER_extraversion:
        call.write(arg, _cstr(XEN_EXTRAVERSION, 16))
        return 0
    if cmd == abi.XENVER_compile_info:
        call.write(arg, COMPILE_INFO)
        return 0
    if cmd == abi.XENVER_capabilities:
        call.write(arg, _cstr(b"xen-3.0-x86_32p" if dom.pae else b"xen-3.0-x86_32", 1024))
        return 0
    if cmd == abi.XENVER_changeset:
        call.write(arg, _cstr(XEN_CHANGESET, 64))
        return 0
    if cmd == abi.XENVER_platform_parameters:
        call.write_struct(abi.xen_platform_parameters, arg, {"virt_start": dom.mode.hole_start})
        return 0
    if cmd == abi.XENVER_get_features:
        fi = call.read_struct(abi.xen_feature_info, arg)
        fi["submap"] = dom.features if fi["submap_idx"] == 0 else 0
        call.write_struct(abi.xen_feature_info, arg, fi)
        return 0
    if cmd == abi.XENVER_pagesize:
        return 4096
    if cmd == abi.XENVER_guest_handle:
        call.write(arg, dom.uuid.bytes)
        return 0
    if cmd in (abi.XENVER_commandline, abi.XENVER_build_id):
        return -EPERM
    return -ENOSYS
