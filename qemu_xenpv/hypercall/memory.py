"""memory_op: reservations, the memory map, the M2P's location."""

from .. import abi
from ..abi import EINVAL, EPERM, ESRCH, ENOSYS, EFAULT
from . import hypercall


def _target(call, arg) -> object:
    domid = int.from_bytes(call.read(arg, 2), "little")
    if domid in (abi.DOMID_SELF, call.dom.domid):
        return call.dom
    return None


@hypercall("memory_op", 2, dict(abi.XENMEM))
def memory_op(call, cmd, arg):
    dom = call.dom
    cmd &= 0xF                      # low bits: the op; the rest is continuation state
    if cmd == 2:                    # maximum_ram_page
        return dom.ram.size >> 12
    if cmd in (3, 4):               # current_reservation, maximum_reservation
        d = _target(call, arg)
        if d is None:
            return -ESRCH
        return d.nr_pages if cmd == 3 else d.max_pages
    if cmd == 14:                   # maximum_gpfn
        d = _target(call, arg)
        if d is None:
            return -ESRCH
        return d.max_pages - 1
    if cmd == 9:                    # memory_map: a single RAM entry, as for a PV domU
        mm = call.read_struct(abi.xen_memory_map, arg)
        if mm["nr_entries"] < 1:
            return -EINVAL
        call.write_struct(abi.e820_entry, mm["buffer"],
                          {"addr": 0, "size": dom.max_pages << 12, "type": 1})
        mm["nr_entries"] = 1
        call.write_struct(abi.xen_memory_map, arg, mm)
        return 0
    if cmd == 5:                    # machphys_mfn_list: 2 MiB extents of the M2P
        ml = call.read_struct(abi.xen_machphys_mfn_list, arg)
        m2p_bytes = (dom.ram.size >> 12) * 4
        extents = [(dom.mmu.m2p_pa + off) >> 12 for off in range(0, m2p_bytes, 2 << 20)]
        n = min(ml["max_extents"], len(extents))
        for i in range(n):
            call.write_u32(ml["extent_start"] + 4 * i, extents[i])
        ml["max_extents"] = n
        call.write_struct(abi.xen_machphys_mfn_list, arg, ml)
        return 0
    if cmd == 12:                   # machphys_mapping
        call.write_struct(abi.xen_machphys_mapping, arg,
                          {"v_start": dom.mode.m2p_start, "v_end": dom.mode.m2p_end,
                           "max_mfn": (dom.ram.size >> 12) - 1})
        return 0
    return -ENOSYS
