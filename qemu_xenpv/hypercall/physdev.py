"""physdev_op: a domU owns no physical devices; only the virtual IOPL."""

from .. import abi
from ..abi import EINVAL, EPERM, ENOSYS
from . import hypercall

PHYSDEVOP_set_iopl, PHYSDEVOP_set_iobitmap = 6, 7
PHYSDEVOP_NAMES = {4: "irq_unmask_notify", 5: "irq_status_query", 6: "set_iopl",
                   7: "set_iobitmap", 8: "apic_read", 9: "apic_write", 10: "alloc_irq_vector",
                   11: "free_irq_vector", 12: "eoi", 13: "map_pirq", 14: "unmap_pirq",
                   15: "manage_pci_add", 16: "manage_pci_remove", 17: "pirq_eoi_gmfn_v1"}


@hypercall("physdev_op", 2, PHYSDEVOP_NAMES, note="set_iopl only; no physical devices")
def physdev_op(call, cmd, arg):
    if cmd == PHYSDEVOP_set_iopl:
        iopl = call.read_u32(arg)
        if iopl > 3:
            return -EINVAL
        call.vcpu.iopl = iopl << 12
        return 0
    if cmd == PHYSDEVOP_set_iobitmap:
        # struct {handle bitmap; u32 nr_ports}: ports it allows are emulated
        # (a domU has none: reads float, writes vanish) instead of faulting
        bitmap, nr_ports = call.read_u32(arg), call.read_u32(arg + 4)
        if nr_ports > 65536:
            return -EINVAL
        call.vcpu.iobmp = (bitmap, nr_ports)
        return 0
    if cmd in (8, 9, 10, 11, 13, 14, 15, 16):
        return -EPERM
    return -ENOSYS


@hypercall("physdev_op_compat", 1, note="the pre-3.0.2 form of physdev_op")
def physdev_op_compat(call, op_ptr):
    return physdev_op.__wrapped__(call, call.read_u32(op_ptr), op_ptr + 4) \
        if hasattr(physdev_op, "__wrapped__") else _compat(call, op_ptr)


def _compat(call, op_ptr):
    cmd = call.read_u32(op_ptr)
    return physdev_op(call, cmd, op_ptr + 4)


@hypercall("sysctl", 1, status="refused", note="domain 0 only: -EPERM for a domU")
def sysctl(call, arg):
    return -EPERM


@hypercall("domctl", 1, status="refused", note="domain 0 only: -EPERM for a domU")
def domctl(call, arg):
    return -EPERM


@hypercall("platform_op", 1, status="refused", note="domain 0 only: -EPERM for a domU")
def platform_op(call, arg):
    return -EPERM
