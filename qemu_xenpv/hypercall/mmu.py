"""Page-table hypercalls: mmu_update, mmuext_op, update_va_mapping(_otherdomain).
All validation lives in qemu_xenpv.mm; this module decodes guest requests."""

from .. import abi
from ..abi import EINVAL, EPERM, ESRCH, ENOSYS, EACCES, EFAULT
from ..mm import PGT_l1, PGT_l2, PGT_l3, PGT_writable
from ..shim import K
from . import hypercall, GuestFault

MMU_UPDATE_PREEMPTED = 1 << 31
_REQ = __import__("struct").Struct("<QQ")


def _foreign_ok(call, domid: int) -> int:
    if domid in (abi.DOMID_SELF, call.dom.domid):
        return 0
    return -ESRCH


def _write_count(call, ptr: int, n: int) -> None:
    if ptr:
        call.write_u32(ptr, n)


@hypercall("mmu_update", 4, {abi.MMU_NORMAL_PT_UPDATE: "normal_pt_update",
                              abi.MMU_MACHPHYS_UPDATE: "machphys_update",
                              abi.MMU_PT_UPDATE_PRESERVE_AD: "pt_update_preserve_ad"})
def mmu_update(call, reqs, count, done_ptr, foreigndom):
    rc = _foreign_ok(call, foreigndom)
    if rc:
        return rc
    count &= ~MMU_UPDATE_PREEMPTED
    mmu = call.dom.mmu
    done = 0
    if count > 0x10000:
        return -EINVAL
    try:
        batch = list(_REQ.iter_unpack(call.read(reqs, count * 16))) if count else []
    except GuestFault:
        batch = None                        # read entry by entry: fail where Xen fails
    for i in range(count):
        if batch is not None:
            ptr, val = batch[i]
        else:
            req = call.read_struct(abi.mmu_update, reqs + i * 16)
            ptr, val = req["ptr"], req["val"]
        cmd, ptr = ptr & 3, ptr & ~3
        if cmd in (abi.MMU_NORMAL_PT_UPDATE, abi.MMU_PT_UPDATE_PRESERVE_AD):
            if ptr >= call.dom.ram.size:
                rc = -EPERM
            else:
                rc = mmu.mod_entry(ptr, val, cmd == abi.MMU_PT_UPDATE_PRESERVE_AD)
        elif cmd == abi.MMU_MACHPHYS_UPDATE:
            mfn = ptr >> 12
            if not mmu.owns(mfn):
                rc = -EPERM
            else:
                mmu.set_m2p(mfn, val & 0xFFFFFFFF)
                rc = 0
        else:
            rc = -ENOSYS
        if rc:
            break
        done += 1
    _write_count(call, done_ptr, done)
    return rc


def _flush(call, flags: int) -> None:
    """UVMF_TLB_FLUSH / UVMF_INVLPG: our own TLB is flushed by the CR3 reload
    of the slow exit (the fast exit keeps the TLB); other vCPUs flush when
    kicked into the shim."""
    call.action |= K.ACT_CR3
    if flags & abi.UVMF_ALL or (flags & ~abi.UVMF_FLUSHTYPE_MASK):
        call.dom.flush_other_vcpus(call.vcpu)


def do_update_va_mapping(call, va: int, pte: int, flags: int) -> int:
    dom = call.dom
    if va >= dom.mode.hole_start:
        return -EINVAL
    pl1e = dom.mmu.l1e_addr(call.vcpu.guest_table, va)
    if pl1e is None:
        return -EINVAL
    l1mfn = pl1e >> 12
    if not dom.mmu.ft.type_count[l1mfn] or dom.mmu.ft.type[l1mfn] != PGT_l1:
        return -EINVAL
    rc = dom.mmu.mod_entry(pl1e, pte)
    if rc == 0 and flags & abi.UVMF_FLUSHTYPE_MASK:
        _flush(call, flags)
    return rc


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
    rc = _foreign_ok(call, domid & 0xFFFF)
    if rc:
        return rc
    return do_update_va_mapping(call, va, pte, flags)


MMUEXT = abi.MMUEXT


@hypercall("mmuext_op", 4, {k: v for k, v in MMUEXT.items()})
def mmuext_op(call, ops, count, done_ptr, foreigndom):
    rc = _foreign_ok(call, foreigndom)
    if rc:
        return rc
    count &= ~MMU_UPDATE_PREEMPTED
    done = 0
    for i in range(count):
        op = call.read_struct(abi.mmuext_op, ops + i * 12)
        rc = _mmuext_one(call, op["cmd"], op["arg1"], op["arg2"])
        if rc:
            break
        done += 1
    _write_count(call, done_ptr, done)
    return rc


def _mmuext_one(call, cmd: int, arg1: int, arg2: int) -> int:
    dom, v = call.dom, call.vcpu
    mmu = dom.mmu
    pae = dom.pae
    if cmd in (0, 1, 2, 3):                             # PIN_L1..L4_TABLE
        levels = {0: PGT_l1, 1: PGT_l2, 2: PGT_l3}
        if cmd == 3 or (cmd == 2 and not pae):
            return -EINVAL
        return mmu.pin(arg1, levels[cmd])
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
    if cmd in (8, 9, 10, 11):                           # *_MULTI, *_ALL
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
        return -EINVAL
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
    return -ENOSYS
