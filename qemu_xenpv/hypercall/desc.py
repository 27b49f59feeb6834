"""Descriptor tables: set_gdt and update_descriptor (Xen's
pv/descriptor-tables.c): guest GDT frames are typed seg_desc, validated
and mapped read-only into this vCPU's window in the hypervisor hole."""

from .. import abi
from ..abi import EINVAL, EFAULT
from ..descriptors import check_descriptor
from ..mm import PGT_seg_desc
from . import hypercall

MAX_GDT_FRAMES = 14


@hypercall("set_gdt", 2)
def set_gdt(call, frame_list, entries):
    if entries > abi.FIRST_RESERVED_GDT_ENTRY:
        return -EINVAL
    nr = (entries + 511) // 512
    frames = [call.read_u32(frame_list + 4 * i) for i in range(nr)]
    return call.vcpu.set_gdt(frames, entries, call)


@hypercall("update_descriptor", 4)
def update_descriptor(call, pa_lo, pa_hi, word_lo, word_hi):
    """update_descriptor(u64 machine address, u64 descriptor) split in 32-bit words."""
    pa = (pa_hi << 32) | pa_lo
    mmu = call.dom.mmu
    mfn = pa >> 12
    if pa & 7 or not mmu.owns(mfn):
        return -EINVAL
    fixed = check_descriptor(word_lo, word_hi)
    if fixed is None:
        return -EINVAL
    ft = mmu.ft
    if ft.type_count[mfn] and ft.type[mfn] == PGT_seg_desc:
        pass                                    # a live GDT/LDT page: validated write
    elif mmu.get_page_type(mfn, 7):             # otherwise it must be able to be writable
        return -EINVAL
    else:
        mmu.put_page_type(mfn)
    call.dom.ram.w32(pa, fixed[0])
    call.dom.ram.w32(pa + 4, fixed[1])
    return 0
