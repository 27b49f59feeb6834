"""memory_op: reservations, the memory map, the M2P's location."""

from .. import abi
from ..abi import EINVAL, EPERM, ESRCH, ENOSYS, EFAULT, EBUSY, ENOMEM
from . import hypercall


def _target(call, arg) -> object:
    domid = int.from_bytes(call.read(arg, 2), "little")
    if domid in (abi.DOMID_SELF, call.dom.domid):
        return call.dom
    return None


MEMOP_EXTENT_SHIFT = 6              # cmd bits above this: continuation start extent
MAX_ORDER = 9                       # extents of up to 2 MiB


def _pages(order: int) -> int:
    return 1 << order


def _alloc_contig(dom, order: int, address_bits: int = 0):
    """A naturally aligned run of 2**order free machine frames."""
    n = _pages(order)
    free = sorted(dom.free_mfns)
    have = set(free)
    for mfn in free:
        if mfn % n or any(mfn + k not in have for k in range(n)):
            continue
        if address_bits and (mfn + n) << 12 > (1 << address_bits):
            continue
        for k in range(n):
            dom.free_mfns.remove(mfn + k)
        return mfn
    return None


def _give(dom, mfn: int, n: int, gpfn: int = None) -> None:
    for k in range(n):
        dom.mmu.ft.owner[mfn + k] = dom.domid
        dom.ram.zero((mfn + k) << 12, 4096)
        dom.mmu.set_m2p(mfn + k, abi.INVALID_M2P_ENTRY if gpfn is None else gpfn + k)
    dom.nr_pages += n


def _take_back(dom, mfn: int, n: int) -> int:
    """guest_remove_page for each frame: refused (-EBUSY) while anything
    still references it (a mapping, a type, a pin)."""
    ft = dom.mmu.ft
    for k in range(n):
        m = mfn + k
        if not dom.mmu.owns(m) or m in dom.special_mfns():
            return -EINVAL
        if ft.count[m] or ft.type_count[m]:
            return -EBUSY
    for k in range(n):
        ft.owner[mfn + k] = 0xFFFF
        dom.mmu.set_m2p(mfn + k, abi.INVALID_M2P_ENTRY)
        dom.free_mfns.append(mfn + k)
    dom.nr_pages -= n
    return 0


def _reservation(call, cmd: int, arg: int) -> int:
    """increase_reservation (0), decrease_reservation (1), populate_physmap (6).
    Returns the number of extents done, as Xen does."""
    dom = call.dom
    start = cmd >> MEMOP_EXTENT_SHIFT
    r = call.read_struct(abi.xen_memory_reservation, arg)
    if r["domid"] not in (abi.DOMID_SELF, dom.domid):
        return -ESRCH
    order = r["extent_order"]
    if order > MAX_ORDER:
        return -EINVAL
    address_bits = r["mem_flags"] & 0xFF
    n = _pages(order)
    op = cmd & 0x3F
    done = start
    for i in range(start, r["nr_extents"]):
        slot = r["extent_start"] + 4 * i
        if op == 1:                                     # decrease: guest gives MFNs
            mfn = call.read_u32(slot)
            if mfn % n or _take_back(dom, mfn, n):
                break
        else:
            if dom.nr_pages + n > dom.max_pages:
                break
            gpfn = call.read_u32(slot) if op == 6 else None
            mfn = _alloc_contig(dom, order, address_bits)
            if mfn is None:
                break
            _give(dom, mfn, n, gpfn)
            if r["extent_start"]:
                call.write_u32(slot, mfn)
        done += 1
    return done


def _exchange(call, arg: int) -> int:
    """XENMEM_exchange: give pages back, get others (contiguous or below
    an address width); nr_exchanged says how far it got."""
    dom = call.dom
    raw = call.read(arg, 44)
    inp = abi.xen_memory_reservation.unpack(raw, 0)
    out = abi.xen_memory_reservation.unpack(raw, 20)
    nr_exchanged = int.from_bytes(raw[40:44], "little")
    if inp["domid"] not in (abi.DOMID_SELF, dom.domid) or out["domid"] != inp["domid"]:
        return -ESRCH
    if inp["extent_order"] > MAX_ORDER or out["extent_order"] > MAX_ORDER:
        return -EINVAL
    in_pages = inp["nr_extents"] << inp["extent_order"]
    if in_pages != out["nr_extents"] << out["extent_order"]:
        return -EINVAL
    rc = 0
    i_in = nr_exchanged
    ratio = max(1, _pages(out["extent_order"]) // _pages(inp["extent_order"]))
    while i_in < inp["nr_extents"] and rc == 0:
        batch = [call.read_u32(inp["extent_start"] + 4 * (i_in + k)) for k in range(ratio)]
        # every input page must be ours and free of references before we give anything
        ft = dom.mmu.ft
        for mfn in batch:
            for k in range(_pages(inp["extent_order"])):
                m = mfn + k
                if not dom.mmu.owns(m) or ft.count[m] or ft.type_count[m]:
                    rc = -EINVAL if not dom.mmu.owns(m) else -EBUSY
        if rc:
            break
        for mfn in batch:
            _take_back(dom, mfn, _pages(inp["extent_order"]))
        outs_per = max(1, _pages(inp["extent_order"]) * ratio // _pages(out["extent_order"]))
        for k in range(outs_per):
            j = (i_in * _pages(inp["extent_order"])) // _pages(out["extent_order"]) + k
            mfn = _alloc_contig(dom, out["extent_order"], out["mem_flags"] & 0xFF)
            if mfn is None:
                rc = -ENOMEM
                break
            _give(dom, mfn, _pages(out["extent_order"]))
            call.write_u32(out["extent_start"] + 4 * j, mfn)
        if rc:
            break
        i_in += ratio
        call.write_u32(arg + 40, i_in)
    return rc


@hypercall("memory_op", 2, dict(abi.XENMEM))
def memory_op(call, cmd, arg):
    dom = call.dom
    if cmd & 0x3F in (0, 1, 6):
        return _reservation(call, cmd, arg)
    if cmd & 0x3F == 11:
        return _exchange(call, arg)
    cmd &= 0x3F                     # low bits: the op; the rest is continuation state
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
