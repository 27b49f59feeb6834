"""memory_op: reservations, the memory map, the M2P's location."""

from .. import abi
from ..abi import EINVAL, EPERM, ESRCH, ENOSYS, EFAULT, EBUSY, ENOMEM, E2BIG
from . import hypercall, GuestFault


SELF, OTHER = "self", "other"


def _any_id(call, domid: int):
    """rcu_lock_domain_by_any_id(): DOMID_SELF or the caller's own id is the
    caller (SELF), another existing domain OTHER (which XSM's dummy policy
    then refuses a domU: -EPERM), anything else None (-ESRCH)."""
    domid &= 0xFFFF
    if domid in (abi.DOMID_SELF, call.dom.domid):
        return SELF
    if domid < abi.DOMID_FIRST_RESERVED and call.dom.hv.domain_by_id(domid) is not None:
        return OTHER
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


def _alloc_extents(dom, count: int, order: int, address_bits: int):
    """count extents of 2**order frames, or None (and nothing taken)."""
    new = []
    for _ in range(count):
        mfn = _alloc_contig(dom, order, address_bits)
        if mfn is None:
            dom.free_mfns.extend(m + k for m in new for k in range(_pages(order)))
            return None
        new.append(mfn)
    return new


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
    Returns the number of extents done, as Xen does: every refusal (a bad
    argument, another domain, a fault) is just "none (more) done"."""
    dom = call.dom
    start = cmd >> MEMOP_EXTENT_SHIFT
    op = cmd & 0x3F
    try:
        r = call.read_struct(abi.xen_memory_reservation, arg)
    except GuestFault:
        return start
    nr = r["nr_extents"]
    lst = r["extent_start"]
    if nr > (0xFFFFFFFF >> MEMOP_EXTENT_SHIFT):         # cannot encode a continuation
        return start
    if lst and not call.array_ok(lst, nr, 4):           # compat_handle_okay()
        return start
    if start >= nr:
        return start
    if _any_id(call, r["domid"]) is not SELF:           # -ESRCH / XSM: nothing done
        return start
    address_bits = r["mem_flags"] & 0xFF
    if address_bits and address_bits <= 12:             # construct_memop_from_reservation
        return start
    order = r["extent_order"]
    if order > MAX_ORDER:                               # max_order(current->domain)
        return start
    if op != 0 and not lst:         # decrease/populate read the list (a NULL handle)
        return start
    if not _node_ok(r["mem_flags"]):
        return start
    n = _pages(order)
    done = start
    for i in range(start, nr):
        slot = lst + 4 * i
        try:
            if op == 1:                                 # decrease: guest gives MFNs
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
                if lst:
                    call.write_u32(slot, mfn)
        except GuestFault:
            break
        done += 1
    return done


def _node_ok(mem_flags: int) -> bool:
    """propagate_node() for a domU: a NUMA node may be named, not demanded."""
    if ((mem_flags >> 8) - 1) & 0xFF == 0xFF:
        return True
    return not mem_flags & XENMEMF_exact_node_request


def _exchange(call, arg: int) -> int:
    """XENMEM_exchange as a 32-bit guest reaches it: compat_memory_op()
    checks the arguments, then translates the lists a chunk at a time (what
    fits its 8 KiB translation area) and runs memory_exchange() on each;
    after each chunk the new MFNs and nr_exchanged are copied back.
    memory_exchange() swaps the chunk's input frames for newly allocated
    ones, entered in the M2P at the gpfns the guest put in out.extent_start."""
    raw = call.read(arg, 44)
    inp = abi.xen_memory_reservation.unpack(raw, 0)
    out = abi.xen_memory_reservation.unpack(raw, 20)
    nr_exchanged = int.from_bytes(raw[40:44], "little")
    io, oo = inp["extent_order"], out["extent_order"]
    ni, no = inp["nr_extents"], out["nr_extents"]
    delta = oo - io
    if (nr_exchanged > ni
            or (0xFFFFFFFF >> min(io, 32)) < ni or (0xFFFFFFFF >> min(oo, 32)) < no
            or (delta > 0 and nr_exchanged & ((1 << min(delta, 32)) - 1))
            or (ni << io) != (no << oo)):
        return -EINVAL
    if not call.array_ok(inp["extent_start"], ni, 4) or \
            not call.array_ok(out["extent_start"], no, 4):
        return -EFAULT
    chunk = (_XLAT_SIZE - _NAT_EXCHANGE_SIZE) // (((1 << min(abs(delta), 32)) + 1) * 8)
    if chunk == 0:
        return -E2BIG
    if delta > 0:
        chunk <<= delta
    # (Xen re-reads the argument for each chunk; we keep our own copy, so a
    # guest rewriting it meanwhile cannot keep us here)
    while True:
        end = min(nr_exchanged + chunk, ni)
        # translate the chunk: both lists are copied in first
        ins = [call.read_u32(inp["extent_start"] + 4 * k) for k in range(nr_exchanged, end)]
        if delta >= 0:
            o_first, o_end = nr_exchanged >> delta, end >> delta
        else:
            o_first, o_end = nr_exchanged << -delta, end << -delta
        gpfns = [call.read_u32(out["extent_start"] + 4 * k) for k in range(o_first, o_end)]
        rc, done, mfns = _memory_exchange(call, inp, out, nr_exchanged, end, ins, gpfns)
        # copy back the MFNs of what was exchanged, then nr_exchanged
        for k, mfn in enumerate(mfns):
            try:
                call.write_u32(out["extent_start"] + 4 * (o_first + k), mfn)
            except GuestFault:
                rc = -EFAULT
                break
        try:
            call.write_u32(arg + 40, done)
        except GuestFault:
            rc = -EFAULT
        if rc < 0 or end >= ni:
            return rc
        nr_exchanged = done


_XLAT_SIZE = 2 * 4096               # COMPAT_ARG_XLAT_SIZE
_NAT_EXCHANGE_SIZE = 72             # sizeof(struct xen_memory_exchange), 64-bit
XENMEMF_exact_node_request = 1 << 17


def _memory_exchange(call, inp, out, nr_exchanged: int, end: int, ins, gpfns):
    """memory_exchange() on input extents [nr_exchanged, end): returns
    (rc, nr_exchanged after, the new MFNs of the exchanged output extents)."""
    dom = call.dom
    io, oo = inp["extent_order"], out["extent_order"]
    if max(io, oo) > MAX_ORDER:                        # max_order(current->domain)
        return -EPERM, nr_exchanged, []
    if inp["domid"] != out["domid"]:
        return -EINVAL, nr_exchanged, []
    if nr_exchanged == end:
        return 0, nr_exchanged, []
    if not _node_ok(out["mem_flags"]):
        return -EINVAL, nr_exchanged, []
    target = _any_id(call, inp["domid"])
    if target is not SELF:
        return (-ESRCH if target is None else -EPERM), nr_exchanged, []  # xsm_memory_exchange
    if io <= oo:
        in_chunk, out_chunk = oo - io, 0
    else:
        in_chunk, out_chunk = 0, io - oo
    n_in, n_out = _pages(io), _pages(oo)
    ft = dom.mmu.ft
    special = dom.special_mfns()
    first = nr_exchanged >> in_chunk
    mfns = []
    rc = 0
    i = first
    while i < end >> in_chunk:
        # steal_page() every input frame: ours, not special, held by nothing
        # else (no mapping, type or pin); else -EINVAL
        b = (i << in_chunk) - nr_exchanged
        frames = [g + k for g in ins[b:b + (1 << in_chunk)] for k in range(n_in)]
        if len(set(frames)) != len(frames) or any(
                not dom.mmu.owns(m) or m in special or ft.count[m] or ft.type_count[m]
                for m in frames):
            rc = -EINVAL
            break
        # Xen allocates the chunk's output extents before it frees the input
        # (so they are other frames); this machine's spare frames are few:
        # failing that, the freed input frames are allocated from too
        new = _alloc_extents(dom, 1 << out_chunk, oo, out["mem_flags"] & 0xFF)
        if new is None:
            saved = [(m, dom.mmu.m2p(m)) for m in frames]
            for m in frames:
                _take_back(dom, m, 1)
            new = _alloc_extents(dom, 1 << out_chunk, oo, out["mem_flags"] & 0xFF)
            if new is None:                         # reassign the input frames
                for m, pfn in saved:
                    dom.free_mfns.remove(m)
                    dom.mmu.ft.owner[m] = dom.domid
                    dom.mmu.set_m2p(m, pfn)
                dom.nr_pages += len(saved)
                rc = -ENOMEM
                break
        else:
            for m in frames:
                _take_back(dom, m, 1)
        ob = (i << out_chunk) - (first << out_chunk)
        for j, mfn in enumerate(new):
            _give(dom, mfn, n_out, gpfns[ob + j])      # guest_physmap_add_page: the M2P
            mfns.append(mfn)
        i += 1
    return rc, (end if rc == 0 else i << in_chunk), mfns


@hypercall("memory_op", 2, dict(abi.XENMEM))
def memory_op(call, cmd, arg):
    dom = call.dom
    op, start = cmd & 0x3F, cmd >> MEMOP_EXTENT_SHIFT
    if op in (0, 1, 6):
        return _reservation(call, cmd, arg)
    if op in (2, 3, 4, 11, 14) and start:
        return -EINVAL              # no continuation state for these
    if op == 11:
        return _exchange(call, arg)
    if op == 2:                     # maximum_ram_page
        return dom.ram.size >> 12
    if op in (3, 4, 14):            # current_reservation, maximum_reservation, maximum_gpfn
        target = _any_id(call, int.from_bytes(call.read(arg, 2), "little"))
        if target is None:
            return -ESRCH
        if target is OTHER:
            return -EPERM           # xsm_memory_stat_reservation(XSM_TARGET)
        return dom.nr_pages if op == 3 else dom.max_pages if op == 4 else dom.max_pages - 1
    # arch_memory_op() switches on the whole cmd: continuation bits are -ENOSYS
    if cmd == 9:                    # memory_map: the single RAM entry a PV domU is given
        mm = call.read_struct(abi.xen_memory_map, arg)
        n = min(mm["nr_entries"], 1)
        if n:
            call.write_struct(abi.e820_entry, mm["buffer"],
                              {"addr": 0, "size": dom.max_pages << 12, "type": 1})
        mm["nr_entries"] = n
        call.write_struct(abi.xen_memory_map, arg, mm)
        return 0
    if cmd == 5:                    # machphys_mfn_list: 2 MiB extents of the M2P
        ml = call.read_struct(abi.xen_machphys_mfn_list, arg)
        m2p_bytes = (dom.ram.size >> 12) * 4
        extents = [(dom.mmu.m2p_pa + off) >> 12 for off in range(0, m2p_bytes, 2 << 20)]
        n = min(ml["max_extents"], len(extents))
        for i in range(n):
            call.write_u32(ml["extent_start"] + 4 * i, extents[i])
        ml["nr_extents"] = n                # max_extents stays as the guest wrote it
        call.write_struct(abi.xen_machphys_mfn_list, arg, ml)
        return 0
    if cmd == 12:                   # machphys_mapping
        call.write_struct(abi.xen_machphys_mapping, arg,
                          {"v_start": dom.mode.m2p_start, "v_end": dom.mode.m2p_end,
                           "max_mfn": (dom.ram.size >> 12) - 1})
        return 0
    return -ENOSYS
