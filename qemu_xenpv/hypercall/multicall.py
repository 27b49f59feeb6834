"""multicall: several hypercalls in one entry; each result is written back."""

from .. import abi
from ..abi import EINVAL, ENOSYS
from ..shim import K
from . import hypercall, Call, TABLE, GuestFault, DomainCrash

STOP = K.ACT_HALT | K.ACT_BLOCK | K.ACT_RETRY


@hypercall("multicall", 2, note="an iret entry ends the multicall (XSA-213); nested multicall -EINVAL")
def multicall(call, call_list, nr_calls):
    # guest_handle_okay(): the whole list is checked before any entry runs
    # (see Call.array_ok for how this differs from 64-bit Xen)
    if nr_calls and not call.array_ok(call_list, nr_calls, abi.multicall_entry.size):
        return -abi.EFAULT
    for i in range(nr_calls):
        va = call_list + i * abi.multicall_entry.size
        if i and call.preempt_due():
            return call.continue_with(va, nr_calls - i)
        ent = call.read_struct(abi.multicall_entry, va)
        op = ent["op"]
        fam = TABLE.get(op)
        if op == abi.HYPERCALL_NR["iret"]:
            # iret ends the multicall (Xen's mc_exit, the XSA-213 fix): the
            # vCPU continues in the frame it popped, and later entries do
            # not run
            res = fam.fn(call)
            call.trace_extra = {"multicall_exit": i}
            return res
        sub = Call(call.vcpu, None, tuple(ent["args"]) + (op,), t0=call.t0)
        if op == abi.HYPERCALL_NR["multicall"]:
            res = -EINVAL
        elif fam is None:
            res = -ENOSYS
        else:
            try:
                res = fam.fn(sub, *sub.args[:fam.nargs])
            except GuestFault:
                res = -abi.EFAULT
        call.action |= sub.action
        if sub.again is not None:
            # the entry was preempted: its continuation goes back into the
            # entry, and the multicall continues from it (Xen's
            # MCSF_call_preempted)
            ent["args"] = list(sub.again)
            call.write_struct(abi.multicall_entry, va, ent)
            return call.continue_with(va, nr_calls - i)
        call.write_u32(va + 4, res)
        if call.dom.tracer is not None:
            call.dom.tracer.record(sub, fam, res)
        if sub.action & K.ACT_BLOCK and i + 1 < nr_calls and not sub.action & K.ACT_HALT:
            # SCHEDOP_block before the last entry: Xen preempts the multicall
            # there and runs the rest once the vCPU is woken.  Sleep and ask
            # again from the block entry, which answers at once when an
            # event is pending (and sleeps again when not).
            call.action = (call.action & ~K.ACT_BLOCK) | K.ACT_RETRY
        if call.action & K.ACT_RETRY:
            # the entry sleeps (SCHEDOP_poll, block) and is asked again:
            # continue the multicall from it, as Xen's hypercall
            # continuation does
            r = call.regs
            r["ebx"], r["ecx"] = va, nr_calls - i
            return 0
        if sub.action & STOP:
            break
    return 0
