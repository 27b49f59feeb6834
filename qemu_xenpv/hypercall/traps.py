"""The virtual CPU's trap side: the trap table, callbacks, kernel stack,
lazy FPU switching and the iret hypercall (Xen's pv/traps.c, pv/iret.c,
pv/callback.c for 32-bit guests)."""

from .. import abi
from ..abi import EINVAL, EFAULT
from ..shim import K
from . import hypercall, DomainCrash

EFLAGS_IF, EFLAGS_IOPL, EFLAGS_VM = 1 << 9, 3 << 12, 1 << 17
EFLAGS_ALL, EFLAGS_MBS = 0x3F7FD5, 2


def fixup_selector(sel: int) -> int:
    """RPL 0 is not for guests: make it the kernel's RPL 1 (fixup_guest_*_selector)."""
    return (sel & ~3) | 1 if (sel & 3) == 0 else sel


@hypercall("set_trap_table", 1)
def set_trap_table(call, table):
    v = call.vcpu
    if table == 0:
        v.clear_traps()
        return 0
    for i in range(256):
        ti = call.read_struct(abi.trap_info, table + i * abi.trap_info.size)
        if ti["address"] == 0:
            break
        v.set_trap(ti["vector"], ti["flags"], fixup_selector(ti["cs"]), ti["address"])
    return 0


@hypercall("set_callbacks", 4)
def set_callbacks(call, event_sel, event_addr, failsafe_sel, failsafe_addr):
    v = call.vcpu
    v.set_callback(abi.CALLBACKTYPE_event, fixup_selector(event_sel), event_addr, 0)
    v.set_callback(abi.CALLBACKTYPE_failsafe, fixup_selector(failsafe_sel), failsafe_addr, 0)
    return 0


@hypercall("callback_op", 2, {abi.CALLBACKOP_register: "register",
                               abi.CALLBACKOP_unregister: "unregister"})
def callback_op(call, cmd, arg):
    v = call.vcpu
    if cmd == abi.CALLBACKOP_register:
        cb = call.read_struct(abi.callback_register, arg)
        t = cb["type"]
        if t in (abi.CALLBACKTYPE_event, abi.CALLBACKTYPE_failsafe,
                 abi.CALLBACKTYPE_syscall32, abi.CALLBACKTYPE_sysenter, abi.CALLBACKTYPE_nmi):
            v.set_callback(t, fixup_selector(cb["cs"]), cb["eip"], cb["flags"])
            return 0
        return -EINVAL
    if cmd == abi.CALLBACKOP_unregister:
        t = call.read_struct(abi.callback_unregister, arg)["type"]
        if t == abi.CALLBACKTYPE_nmi:
            v.set_callback(t, 0, 0, 0)
            return 0
        return -EINVAL
    return -EINVAL


@hypercall("stack_switch", 2)
def stack_switch(call, ss, esp):
    v = call.vcpu
    v.mbox.set("kernel_ss", fixup_selector(ss))
    v.mbox.set("kernel_sp", esp)
    return 0


@hypercall("fpu_taskswitch", 1)
def fpu_taskswitch(call, set_ts):
    call.vcpu.mbox.set("fpu_ts", 1 if set_ts else 0)
    call.action |= K.ACT_FPU
    return 0


@hypercall("iret", 0, note="compat_iret semantics; not allowed inside multicall")
def iret(call):
    """Pop {eax, eip, cs, eflags[, esp, ss]} from the guest stack (compat_iret)."""
    r = call.regs
    v = call.vcpu
    esp = r["esp"]
    try:
        frame = call.read(esp, 16)
    except Exception:
        raise DomainCrash("iret: cannot read the iret frame")
    eax, eip, cs, eflags = (int.from_bytes(frame[i:i + 4], "little") for i in range(0, 16, 4))
    cs &= 0xFFFF
    if call.dom.vm_assist & (1 << 4):       # architectural_iopl
        v.iopl = eflags & EFLAGS_IOPL
    r["eax"], r["eip"], r["cs"] = eax, eip, cs
    r["eflags"] = (eflags & EFLAGS_ALL & ~EFLAGS_IOPL) | EFLAGS_IF | EFLAGS_MBS
    if eflags & EFLAGS_VM:
        raise DomainCrash("iret: VM86 mode is not available")
    if (cs & 3) == 0:
        raise DomainCrash("iret: return to ring 0")
    if (cs & 3) == 1:
        r["esp"] = esp + 16
    else:
        tail = call.read(esp + 16, 8)
        r["esp"] = int.from_bytes(tail[0:4], "little")
        r["ss"] = int.from_bytes(tail[4:8], "little")
    call.dom.ram.w8(v.vcpu_info_pa + abi.VI_UPCALL_MASK, 0 if eflags & EFLAGS_IF else 1)
    return eax
