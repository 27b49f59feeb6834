"""Page-table hypercalls: mmu_update, mmuext_op, update_va_mapping(_otherdomain).
All validation lives in qemu_xenpv.mm; this module decodes guest requests
and follows the error paths of Xen's do_mmu_update, compat_mmuext_op /
do_mmuext_op and __do_update_va_mapping (xen/arch/x86/mm.c,
x86_64/compat/mm.c) for a 32-bit PV domU."""

import struct

from .. import abi
from ..abi import EINVAL, EPERM, ESRCH, ENOSYS, EACCES, EFAULT, EOPNOTSUPP
from ..mm import PGT_l1, PGT_l2, PGT_l3, PGT_writable
from ..shim import K
from . import hypercall, GuestFault

MMU_UPDATE_PREEMPTED = 1 << 31
_REQ = struct.Struct("<QQ")
_CHUNK = 512                                # requests read from the guest at once
_NORMAL, _MACHPHYS = abi.MMU_NORMAL_PT_UPDATE, abi.MMU_MACHPHYS_UPDATE
_PRESERVE_AD, _NO_TRANSLATE = abi.MMU_PT_UPDATE_PRESERVE_AD, abi.MMU_PT_UPDATE_NO_TRANSLATE

# What get_pg_owner() finds.  Every domain other than the caller (DOMID_XEN,
# domain 0, another domU) is then refused by XSM's dummy policy (-EPERM);
# DOMID_IO is let through and refused frame by frame.
PG_SELF, PG_IO, PG_OTHER = "self", "io", "other"


def get_pg_owner(call, domid: int):
    """get_pg_owner() (common/page_alloc.c): None where Xen answers NULL,
    i.e. -ESRCH: the caller's own domid ("Cannot specify itself as foreign
    domain": only DOMID_SELF names the caller) and domains that do not
    exist."""
    domid &= 0xFFFF
    dom = call.dom
    if domid == dom.domid:
        return None
    if domid == abi.DOMID_SELF:
        return PG_SELF
    if domid == abi.DOMID_IO:
        return PG_IO
    if domid == abi.DOMID_XEN:
        return PG_OTHER
    if domid < abi.DOMID_FIRST_RESERVED and dom.hv.domain_by_id(domid) is not None:
        return PG_OTHER
    return None


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _read_done(call, ptr: int) -> int:
    """A continuation (count | MMU_UPDATE_PREEMPTED) adds to *pdone."""
    if not ptr:
        return 0
    try:
        return call.read_u32(ptr)
    except GuestFault:
        return 0


def _write_done(call, ptr: int, n: int) -> None:
    """copy_to_guest(pdone): best effort, its failure changes nothing."""
    if ptr:
        try:
            call.write_u32(ptr, n)
        except GuestFault:
            pass


@hypercall("mmu_update", 4, {abi.MMU_NORMAL_PT_UPDATE: "normal_pt_update",
                              abi.MMU_MACHPHYS_UPDATE: "machphys_update",
                              abi.MMU_PT_UPDATE_PRESERVE_AD: "pt_update_preserve_ad",
                              abi.MMU_PT_UPDATE_NO_TRANSLATE: "pt_update_no_translate"})
def mmu_update(call, reqs, count, done_ptr, foreigndom):
    if count == MMU_UPDATE_PREEMPTED and reqs == 0:
        return _s32(foreigndom)             # a continuation's final return value
    done = 0
    if count & MMU_UPDATE_PREEMPTED:
        count &= ~MMU_UPDATE_PREEMPTED
        done = _read_done(call, done_ptr)
    # guest_handle_okay(): the whole array, before any request runs (see
    # Call.array_ok for how this differs from 64-bit Xen)
    if count and not call.array_ok(reqs, count, 16):
        return -EFAULT
    dom = call.dom
    foreign_pt = False
    pt_dom = foreigndom >> 16
    if pt_dom:
        # page tables of another domain (PFD): the domain must exist; XSM
        # then refuses every request that would touch them
        if pt_dom - 1 != dom.domid:
            if pt_dom - 1 >= abi.DOMID_FIRST_RESERVED or dom.hv.domain_by_id(pt_dom - 1) is None:
                return -ESRCH
            foreign_pt = True
    pg = get_pg_owner(call, foreigndom)
    if pg is None:
        _write_done(call, done_ptr, done)
        return -ESRCH
    refused = foreign_pt or pg is PG_OTHER  # xsm_mmu_update(XSM_TARGET): -EPERM
    mmu = dom.mmu
    pae = dom.pae
    cmd_mask = 7 if pae else 3              # sizeof(l1_pgentry_t) - 1
    val_mask = 0xFFFFFFFFFFFFFFFF if pae else 0xFFFFFFFF
    mod_entry = mmu.mod_entry_io if pg is PG_IO else mmu.mod_entry
    rc = 0
    i = 0
    try:
        while i < count and not rc:
            if i and call.preempt_due():
                _write_done(call, done_ptr, done + i)
                return call.continue_with(reqs + 16 * i, (count - i) | MMU_UPDATE_PREEMPTED,
                                          done_ptr, foreigndom)
            n = min(_CHUNK, count - i)
            base = reqs + 16 * i
            try:
                batch = _REQ.iter_unpack(call.read(base, 16 * n))
            except GuestFault:
                # Xen copies one request at a time: run those before the fault
                batch = (_REQ.unpack(call.read(base + 16 * j, 16)) for j in range(n))
            for ptr, val in batch:
                cmd = ptr & cmd_mask
                if cmd == _NORMAL or cmd == _PRESERVE_AD or cmd == _NO_TRANSLATE:
                    # NO_TRANSLATE is a normal update for a PV (untranslated) domain
                    rc = -EPERM if refused else \
                        mod_entry(ptr - cmd, val & val_mask, cmd == _PRESERVE_AD)
                elif cmd == _MACHPHYS:
                    mfn = ptr >> 12
                    if refused:
                        rc = -EPERM
                    elif pg is PG_IO or not mmu.owns(mfn):
                        rc = -EINVAL                # get_page_from_mfn(mfn, pg_owner)
                    else:
                        mmu.set_m2p(mfn, val & 0xFFFFFFFF)
                        rc = 0
                else:
                    rc = -ENOSYS
                if rc:
                    break
                i += 1
    except GuestFault:
        rc = -EFAULT
    _write_done(call, done_ptr, done + i)
    return rc


def _vcpumask(call, ptr: int):
    """vcpumask_to_pcpumask(): the guest's bitmap of vCPUs, read a 32-bit
    word at a time while it can name one; None where the copy faults."""
    nr = len(call.dom.vcpus)
    mask = 0
    off = 0
    while off * 32 < nr:
        try:
            word = call.read_u32(ptr + 4 * off)
        except GuestFault:
            return None
        mask |= word << (32 * off)
        if word >> min(32, nr - off * 32):
            break                           # names a vCPU beyond the last: done
        off += 1
    return mask & ((1 << nr) - 1)


def _flush_mask(call, mask: int) -> None:
    """flush_tlb_mask() over the vCPUs in mask.  Our own TLB is flushed by the
    CR3 reload of the slow exit (the fast exit keeps the TLB); other vCPUs
    flush when kicked into the shim."""
    me = 1 << call.vcpu.vid
    if mask & me:
        call.action |= K.ACT_CR3
    if mask & ~me:
        call.dom.flush_other_vcpus(call.vcpu)


def _flush(call, flags: int) -> int:
    """UVMF_TLB_FLUSH / UVMF_INVLPG, with UVMF_LOCAL, UVMF_ALL or a pointer
    to a vCPU bitmap (UVMF_MULTI): -EFAULT if the bitmap cannot be read
    (the PTE is updated all the same, as in Xen)."""
    if not flags & abi.UVMF_FLUSHTYPE_MASK:
        return 0
    bmap = flags & ~abi.UVMF_FLUSHTYPE_MASK
    if bmap == abi.UVMF_LOCAL:
        call.action |= K.ACT_CR3
    elif bmap == abi.UVMF_ALL:
        call.action |= K.ACT_CR3
        call.dom.flush_other_vcpus(call.vcpu)
    else:
        mask = _vcpumask(call, bmap)
        if mask is None:
            return -EFAULT
        _flush_mask(call, mask)
    return 0


def do_update_va_mapping(call, va: int, pte: int, flags: int, pg=PG_SELF) -> int:
    if pg is PG_OTHER:
        return -EPERM                       # xsm_update_va_mapping(XSM_TARGET)
    dom = call.dom
    if va >= dom.mode.hole_start:
        return -EINVAL
    mmu = dom.mmu
    pl1e = mmu.l1e_addr(call.vcpu.guest_table, va)
    if pl1e is None:
        return -EINVAL
    l1mfn = pl1e >> 12
    if not mmu.ft.type_count[l1mfn] or mmu.ft.type[l1mfn] != PGT_l1:
        return -EINVAL
    rc = (mmu.mod_entry_io if pg is PG_IO else mmu.mod_entry)(pl1e, pte)
    if rc:
        return rc
    return _flush(call, flags)


@hypercall("update_va_mapping", 4)
def update_va_mapping(call, va, a1, a2, a3):
    if call.dom.pae:
        return do_update_va_mapping(call, va, (a2 << 32) | a1, a3)
    return do_update_va_mapping(call, va, a1, a2)


@hypercall("update_va_mapping_otherdomain", 5)
def update_va_mapping_otherdomain(call, va, a1, a2, a3, a4):
    if call.dom.pae:
        pte, flags, domid = (a2 << 32) | a1, a3, a4
    else:
        pte, flags, domid = a1, a2, a3
    pg = get_pg_owner(call, domid)
    if pg is None:
        return -ESRCH
    return do_update_va_mapping(call, va, pte, flags, pg)


MMUEXT = abi.MMUEXT
_OP = struct.Struct("<III")


@hypercall("mmuext_op", 4, {k: v for k, v in MMUEXT.items()})
def mmuext_op(call, ops, count, done_ptr, foreigndom):
    """compat_mmuext_op(): the op array is checked up front, translated op
    by op (NEW_USER_BASEPTR does not exist for a 32-bit guest: -EINVAL),
    then do_mmuext_op() runs what was translated."""
    if count == MMU_UPDATE_PREEMPTED and ops == 0:
        return _s32(foreigndom)             # a continuation's final return value
    preempted = count & MMU_UPDATE_PREEMPTED
    count &= ~MMU_UPDATE_PREEMPTED
    if not count:
        return 0                            # do_mmuext_op() is never called: no *pdone
    if not call.array_ok(ops, count, 12):   # guest_handle_okay(): see Call.array_ok
        return -EFAULT
    pg = get_pg_owner(call, foreigndom)
    if pg is None:
        return -ESRCH
    if pg is not PG_SELF:
        return -EPERM                       # xsm_mmuext_op(XSM_TARGET)
    done = _read_done(call, done_ptr) if preempted else 0
    rc = 0
    i = 0
    try:
        while i < count:
            if i and call.preempt_due():
                _write_done(call, done_ptr, done + i)
                return call.continue_with(ops + 12 * i, (count - i) | MMU_UPDATE_PREEMPTED,
                                          done_ptr, foreigndom)
            cmd, arg1, arg2 = _OP.unpack(call.read(ops + 12 * i, 12))
            rc = _mmuext_one(call, cmd, arg1, arg2)
            if rc:
                break
            i += 1
    except GuestFault:
        rc = -EFAULT
    _write_done(call, done_ptr, done + i)
    return rc


def _mmuext_one(call, cmd: int, arg1: int, arg2: int) -> int:
    dom, v = call.dom, call.vcpu
    mmu = dom.mmu
    pae = dom.pae
    if cmd in (0, 1, 2, 3):                             # PIN_L1..L4_TABLE
        if cmd == 3 or (cmd == 2 and not pae):
            return 0            # "Ignore pinning of invalid paging levels"
        return mmu.pin(arg1, (PGT_l1, PGT_l2, PGT_l3)[cmd])
    if cmd == 4:                                        # UNPIN_TABLE
        return mmu.unpin(arg1)
    if cmd == 5:                                        # NEW_BASEPTR
        rc = v.new_baseptr(arg1)
        if rc == 0:
            call.action |= K.ACT_CR3
        return rc
    if cmd in (6, 7):                                   # TLB_FLUSH_LOCAL, INVLPG_LOCAL
        call.action |= K.ACT_CR3
        return 0
    if cmd in (8, 9):                                   # TLB_FLUSH_MULTI, INVLPG_MULTI
        mask = _vcpumask(call, arg2)
        if mask is None:
            return -EINVAL      # do_mmuext_op maps any vcpumask_to_pcpumask error
        _flush_mask(call, mask)
        return 0
    if cmd in (10, 11):                                 # TLB_FLUSH_ALL, INVLPG_ALL
        call.action |= K.ACT_CR3
        dom.flush_other_vcpus(v)
        return 0
    if cmd in (12, 18):                                 # FLUSH_CACHE(_GLOBAL)
        return -EACCES
    if cmd == 13:                                       # SET_LDT
        rc = v.set_ldt(arg1, arg2)
        if rc == 0:
            call.action |= K.ACT_LDT
        return rc
    if cmd == 15:                                       # NEW_USER_BASEPTR
        return -EINVAL          # refused by the compat translation
    if cmd == 16:                                       # CLEAR_PAGE
        if mmu.get_page_and_type(arg1, PGT_writable):
            return -EINVAL
        dom.ram.zero(arg1 << 12, 4096)
        mmu.put_page_and_type(arg1)
        return 0
    if cmd == 17:                                       # COPY_PAGE dst=arg1 src=arg2
        if not mmu.get_page(arg2):
            return -EINVAL
        if mmu.get_page_and_type(arg1, PGT_writable):
            mmu.put_page(arg2)
            return -EINVAL
        dom.ram.write(arg1 << 12, dom.ram.read(arg2 << 12, 4096))
        mmu.put_page_and_type(arg1)
        mmu.put_page(arg2)
        return 0
    if cmd in (19, 20):                                 # MARK_SUPER, UNMARK_SUPER
        return -EOPNOTSUPP
    return -ENOSYS
