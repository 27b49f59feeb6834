"""multicall: several hypercalls in one entry; each result is written back."""

from .. import abi
from ..abi import EINVAL, ENOSYS
from ..shim import K
from . import hypercall, Call, TABLE, GuestFault, DomainCrash

STOP = K.ACT_HALT | K.ACT_BLOCK | K.ACT_RETRY


@hypercall("multicall", 2, note="iret and nested multicall answer -ENOSYS/-EINVAL per entry")
def multicall(call, call_list, nr_calls):
    for i in range(nr_calls):
        va = call_list + i * abi.multicall_entry.size
        ent = call.read_struct(abi.multicall_entry, va)
        op = ent["op"]
        sub = Call(call.vcpu, None, tuple(ent["args"]) + (op,))
        fam = TABLE.get(op)
        if op == abi.HYPERCALL_NR["multicall"]:
            res = -EINVAL
        elif op == abi.HYPERCALL_NR["iret"] or fam is None:
            res = -ENOSYS               # XSA-213: no iret from a multicall
        else:
            try:
                res = fam.fn(sub, *sub.args[:fam.nargs])
            except GuestFault:
                res = -abi.EFAULT
        call.action |= sub.action
        call.write_u32(va + 4, res)
        if call.dom.tracer is not None:
            call.dom.tracer.record(sub, fam, res)
        if sub.action & STOP:
            break
    return 0
