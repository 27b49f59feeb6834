"""grant_table_op (hypercall 20), v1, on the engine in qemu_xenpv/gnttab.py.

What a guest may do, and what it gets, follows do_grant_table_op() of Xen
as a 32-bit PV guest sees it, with these documented differences (every
domain is its own QEMU machine here, so one guest's frames cannot appear in
another's address space):

* map_grant_ref by a guest: every operation is checked as Xen checks it
  (flags, domain, reference) and then answers GNTST_permission_denied, what
  Xen answers when its security policy refuses a map.  Domain 0 (our Python
  back ends) maps through :meth:`GrantEngine.map_grant_ref`; guests share
  data with grant copies, which work between any two domains.
* unmap_grant_ref / unmap_and_replace by a guest: a guest never holds a
  mapping, so every handle is GNTST_bad_handle, exactly Xen's answer.
* transfer: -EOPNOTSUPP, Xen's answer when booted with gnttab=no-transfer.
* dump_table and cache_flush: -ENOSYS, as today's x86 Xen answers.
"""

from .. import abi
from ..abi import EINVAL, ENOSYS, EOPNOTSUPP, ESRCH, EFAULT
from ..gnttab import (GNTST_bad_domain, GNTST_bad_gntref, GNTST_bad_handle,
                      GNTST_general_error, GNTST_okay, GNTST_permission_denied,
                      GNTST_bad_virt_addr, _pin_kinds)
from . import hypercall, GuestFault

CMD_MASK = (1 << 12) - 1            # GNTTABOP_CMD_MASK: the rest is continuation state


def _engine(call):
    return call.dom.hv.grants


def _target(call, domid: int):
    """rcu_lock_domain_by_any_id() + the XSM_TARGET rule of the default
    policy: a guest may only name itself.  (table or None, status)."""
    if domid in (abi.DOMID_SELF, call.dom.domid):
        return call.dom.gnttab, GNTST_okay
    if call.dom.hv.domain_by_id(domid) is None:
        return None, GNTST_bad_domain
    return None, GNTST_permission_denied


def setup_table(call, uop, count):
    if count != 1:
        return -EINVAL
    op = call.read_struct(abi.gnttab_setup_table, uop)
    t, st = _target(call, op["dom"])
    if t is not None:
        st, frames = t.setup(op["nr_frames"])
        for i, mfn in enumerate(frames):
            try:
                call.write_u32(op["frame_list"] + 4 * i, mfn)
            except GuestFault:
                st = GNTST_bad_virt_addr
                break
    op["status"] = st
    call.write_struct(abi.gnttab_setup_table, uop, op)
    return 0


def query_size(call, uop, count):
    if count != 1:
        return -EINVAL
    op = call.read_struct(abi.gnttab_query_size, uop)
    t, st = _target(call, op["dom"])
    if t is not None:
        op["nr_frames"], op["max_nr_frames"] = len(t.frames), t.max_frames
    op["status"] = st
    call.write_struct(abi.gnttab_query_size, uop, op)
    return 0


def set_version(call, uop, count):
    op = call.read_struct(abi.gnttab_set_version, uop)
    rc = call.dom.gnttab.set_version(op["version"])
    if rc == 0:
        op["version"] = call.dom.gnttab.version
        call.write_struct(abi.gnttab_set_version, uop, op)
    return rc


def get_version(call, uop, count):
    op = call.read_struct(abi.gnttab_get_version, uop)
    t, st = _target(call, op["dom"])
    if t is None:
        return -ESRCH if st == GNTST_bad_domain else -abi.EPERM
    op["version"] = t.version
    call.write_struct(abi.gnttab_get_version, uop, op)
    return 0


def get_status_frames(call, uop, count):
    """v2 only: a v1 table has no status frames."""
    if count != 1:
        return -EINVAL
    op = call.read_struct(abi.gnttab_get_status_frames, uop)
    t, st = _target(call, op["dom"])
    if t is not None:
        st = GNTST_general_error if op["nr_frames"] > 0 else GNTST_okay
    op["status"] = st
    call.write_struct(abi.gnttab_get_status_frames, uop, op)
    return 0


def _preempted(call, uop, i, size, count) -> bool:
    """gnttab_*(): `if ( i && hypercall_preempt_check() ) return i;` and
    do_grant_table_op()'s continuation with the rest of the array."""
    if i and call.preempt_due():
        call.continue_with(call.args[0], uop + i * size, count - i)
        return True
    return False


def map_grant_ref(call, uop, count):
    L = abi.gnttab_map_grant_ref
    for i in range(count):
        if _preempted(call, uop, i, L.size, count):
            return 0
        va = uop + i * L.size
        op = call.read_struct(L, va)
        op["status"] = _guest_map_status(call, op)
        call.write_struct(L, va, op)
    return 0


def _guest_map_status(call, op) -> int:
    if not _pin_kinds(op["flags"]):
        return GNTST_bad_gntref
    if call.dom.hv.domain_by_id(op["dom"]) is None and op["dom"] != abi.DOMID_SELF:
        return GNTST_bad_domain
    call.dom.log_once("gnttab-map", "grant_table_op map_grant_ref: guests cannot map "
                      "grants here (each domain is its own machine): "
                      "GNTST_permission_denied; use grant copy")
    return GNTST_permission_denied


def unmap_grant_ref(call, uop, count):
    layout = abi.gnttab_unmap_grant_ref
    for i in range(count):
        if _preempted(call, uop, i, layout.size, count):
            return 0
        va = uop + i * layout.size
        op = call.read_struct(layout, va)
        op["status"] = GNTST_bad_handle     # a guest holds no maptrack handle
        call.write_struct(layout, va, op)
    return 0


def copy(call, uop, count):
    L = abi.gnttab_copy
    eng = _engine(call)
    for i in range(count):
        if _preempted(call, uop, i, L.size, count):
            return 0
        va = uop + i * L.size
        op = call.read_struct(L, va)
        op["status"] = eng.copy(op, call.dom.domid)
        call.write(va + L.offsets["status"], (op["status"] & 0xFFFF).to_bytes(2, "little"))
    return 0


def swap_grant_ref(call, uop, count):
    L = abi.gnttab_swap_grant_ref
    for i in range(count):
        if _preempted(call, uop, i, L.size, count):
            return 0
        va = uop + i * L.size
        op = call.read_struct(L, va)
        op["status"] = call.dom.gnttab.swap(op["ref_a"], op["ref_b"])
        call.write_struct(L, va, op)
    return 0


OPS = {0: map_grant_ref, 1: unmap_grant_ref, 2: setup_table, 5: copy, 6: query_size,
       7: unmap_grant_ref,       # unmap_and_replace: same size, status at the same offset
       8: set_version, 9: get_status_frames, 10: get_version, 11: swap_grant_ref}


@hypercall("grant_table_op", 3, dict(abi.GNTTABOP),
           note="v1; guest map/unmap refused (GNTST_permission_denied/bad_handle), "
                "transfer -EOPNOTSUPP; domain 0 maps through qemu_xenpv.gnttab")
def grant_table_op(call, cmd, uop, count):
    if count & 0x80000000:                  # (int)count < 0
        return -EINVAL
    if cmd & ~CMD_MASK and cmd & CMD_MASK != 12:
        return -EINVAL
    cmd &= CMD_MASK
    if getattr(call.dom, "gnttab", None) is None:
        return -ENOSYS
    if cmd == 4:
        return -EOPNOTSUPP                  # transfer: as Xen with gnttab=no-transfer
    fn = OPS.get(cmd)
    if fn is None:
        return -ENOSYS                      # dump_table, cache_flush, unknown
    return fn(call, uop, count)
