"""The Xen public ABI as qemu_xenpv.abi declares it, checked against the
numbers in ../shared/xen-abi-i686.md (computed with gcc -m32 on Xen's
public headers): one wrong offset breaks every guest."""

from __future__ import annotations

import struct

import construct as c
import pytest

from qemu_xenpv import abi
from qemu_xenpv.layout import Layout

# (layout, size, {field: offset}) straight from xen-abi-i686.md (and, where
# the reference does not list a struct, from the public header itself).
STRUCTS = [
    (abi.start_info, 1112, {
        "magic": 0, "nr_pages": 32, "shared_info": 36, "flags": 40, "store_mfn": 44,
        "store_evtchn": 48, "console_mfn": 52, "console_evtchn": 56, "pt_base": 60,
        "nr_pt_frames": 64, "mfn_list": 68, "mod_start": 72, "mod_len": 76,
        "cmd_line": 80, "first_p2m_pfn": 1104, "nr_p2m_frames": 1108}),
    (abi.shared_info, 2344, {
        "vcpu_info": 0, "evtchn_pending": 2048, "evtchn_mask": 2176, "wc_version": 2304,
        "wc_sec": 2308, "wc_nsec": 2312, "max_pfn": 2316,
        "pfn_to_mfn_frame_list_list": 2320, "nmi_reason": 2324, "p2m_cr3": 2328,
        "p2m_vaddr": 2332, "p2m_generation": 2336, "wc_sec_hi": 2340}),
    (abi.vcpu_info, 64, {
        "evtchn_upcall_pending": 0, "evtchn_upcall_mask": 1, "evtchn_pending_sel": 4,
        "cr2": 8, "time": 32}),
    (abi.vcpu_time_info, 32, {
        "version": 0, "tsc_timestamp": 8, "system_time": 16, "tsc_to_system_mul": 24,
        "tsc_shift": 28, "flags": 29}),
    (abi.cpu_user_regs, 68, {
        "ebx": 0, "ecx": 4, "edx": 8, "esi": 12, "edi": 16, "ebp": 20, "eax": 24,
        "error_code": 28, "entry_vector": 30, "eip": 32, "cs": 36, "saved_upcall_mask": 38,
        "eflags": 40, "esp": 44, "ss": 48, "es": 52, "ds": 56, "fs": 60, "gs": 64}),
    (abi.trap_info, 8, {"vector": 0, "flags": 1, "cs": 2, "address": 4}),
    (abi.multicall_entry, 32, {"op": 0, "result": 4, "args": 8}),
    (abi.mmu_update, 16, {"ptr": 0, "val": 8}),
    (abi.mmuext_op, 12, {"cmd": 0, "arg1": 4, "arg2": 8}),
    (abi.sched_shutdown, 4, {"reason": 0}),
    (abi.sched_poll, 16, {"ports": 0, "nr_ports": 4, "timeout": 8}),
    (abi.sched_remote_shutdown, 8, {"domain_id": 0, "reason": 4}),
    # xen_callback_t on x86_32 is {cs, eip}: "address" is at 4
    (abi.callback_register, 12, {"type": 0, "flags": 2, "cs": 4, "eip": 8}),
    (abi.callback_unregister, 4, {"type": 0}),
    (abi.xen_feature_info, 8, {"submap_idx": 0, "submap": 4}),
    (abi.xen_platform_parameters, 4, {"virt_start": 0}),
    (abi.vcpu_register_vcpu_info, 16, {"mfn": 0, "offset": 8, "rsvd": 12}),
    (abi.vcpu_set_singleshot_timer, 12, {"timeout_abs_ns": 0, "flags": 8}),
    (abi.vcpu_set_periodic_timer, 8, {"period_ns": 0}),
    (abi.vcpu_runstate_info, 44, {"state": 0, "state_entry_time": 4, "time": 12}),
    (abi.xen_memory_reservation, 20, {
        "extent_start": 0, "nr_extents": 4, "extent_order": 8, "mem_flags": 12, "domid": 16}),
    (abi.xen_memory_map, 8, {"nr_entries": 0, "buffer": 4}),
    (abi.e820_entry, 20, {"addr": 0, "size": 8, "type": 16}),            # packed in Xen
    (abi.xen_machphys_mfn_list, 12, {"max_extents": 0, "extent_start": 4, "nr_extents": 8}),
    (abi.xen_machphys_mapping, 12, {"v_start": 0, "v_end": 4, "max_mfn": 8}),
    (abi.xen_add_to_physmap, 16, {"domid": 0, "size": 2, "space": 4, "idx": 8, "gpfn": 12}),
    (abi.xen_hvm_param, 16, {"domid": 0, "index": 4, "value": 8}),
    (abi.evtchn_alloc_unbound, 8, {"dom": 0, "remote_dom": 2, "port": 4}),
    (abi.evtchn_bind_interdomain, 12, {"remote_dom": 0, "remote_port": 4, "local_port": 8}),
    (abi.evtchn_bind_virq, 12, {"virq": 0, "vcpu": 4, "port": 8}),
    (abi.evtchn_bind_pirq, 12, {"pirq": 0, "flags": 4, "port": 8}),
    (abi.evtchn_bind_ipi, 8, {"vcpu": 0, "port": 4}),
    (abi.evtchn_port_op, 4, {"port": 0}),
    (abi.evtchn_status, 24, {"dom": 0, "port": 4, "status": 8, "vcpu": 12, "u0": 16, "u1": 20}),
    (abi.evtchn_bind_vcpu, 8, {"port": 0, "vcpu": 4}),
    (abi.evtchn_reset, 2, {"dom": 0}),
    (abi.evtchn_op_compat, 28, {"cmd": 0, "u": 4}),
    (abi.grant_entry_v1, 8, {"flags": 0, "domid": 2, "frame": 4}),
    (abi.xencons_interface, 3092, {
        "in": 0, "out": 1024, "in_cons": 3072, "in_prod": 3076, "out_cons": 3080,
        "out_prod": 3084, "connection": 3088}),
]


@pytest.mark.parametrize("layout,size,offsets", STRUCTS, ids=[s[0].name for s in STRUCTS])
def test_struct_size_and_offsets(layout, size, offsets):
    assert layout.size == size
    assert layout.construct.sizeof() == size
    assert layout.struct.size == size
    assert layout.offsets == offsets, f"{layout.name}: declared fields differ from the ABI"


@pytest.mark.parametrize("layout,size,offsets", STRUCTS, ids=[s[0].name for s in STRUCTS])
def test_offsets_agree_with_construct(layout, size, offsets):
    """Each field's offset, found by building the struct with construct
    and looking for a marker, is where Layout says it is."""
    for name, off in offsets.items():
        sub = dict((sc.name, sc) for sc in layout.construct.subcons if sc.name)[name].subcon
        # marker: a recognisable value of the field's own width
        if isinstance(sub, c.FormatField):
            width, val = sub.length, {1: 0x5A, 2: 0x5A5B, 4: 0x5A5B5C5D, 8: 0x5A5B5C5D5E5F6061}[sub.length]
            marker = struct.pack("<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[width], val)
        elif isinstance(sub, c.Array):
            val = [0x5A] * sub.count
            marker = struct.pack("<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[sub.subcon.length], 0x5A)
        else:
            n = sub.sizeof()
            val = bytes([0x5A]) * n
            marker = val
        raw = layout.pack({name: val})
        assert raw[off:off + len(marker)] == marker, f"{layout.name}.{name}"
        assert raw[:off] == bytes(off), f"{layout.name}.{name}: bytes before the field are set"


def test_shared_info_named_offsets():
    assert abi.SI_EVTCHN_PENDING == abi.shared_info.offsets["evtchn_pending"] == 0x800
    assert abi.SI_EVTCHN_MASK == abi.shared_info.offsets["evtchn_mask"] == 0x880
    assert abi.SI_WC_VERSION == 0x900
    assert (abi.SI_WC_SEC, abi.SI_WC_NSEC) == (2308, 2312)
    assert abi.SI_MAX_PFN == 0x90C == abi.shared_info.offsets["max_pfn"]
    assert abi.SI_WC_SEC_HI == 2340 == abi.shared_info.offsets["wc_sec_hi"]
    assert abi.VCPU_INFO_SIZE == 64
    assert (abi.VI_UPCALL_PENDING, abi.VI_UPCALL_MASK, abi.VI_PENDING_SEL, abi.VI_CR2,
            abi.VI_TIME) == (0, 1, 4, 8, 32)
    # 32 vCPUs of 64 bytes fill exactly the space before the pending bitmap
    assert abi.XEN_LEGACY_MAX_VCPUS * abi.VCPU_INFO_SIZE == abi.SI_EVTCHN_PENDING
    assert abi.EVTCHN_2L_NR_CHANNELS == 1024 == 32 * 32


def test_console_ring_constants():
    o = abi.xencons_interface.offsets
    assert (abi.XENCONS_IN, abi.XENCONS_OUT) == (o["in"], o["out"]) == (0, 1024)
    assert (abi.XENCONS_IN_SIZE, abi.XENCONS_OUT_SIZE) == (1024, 2048)
    assert (abi.XENCONS_IN_CONS, abi.XENCONS_IN_PROD, abi.XENCONS_OUT_CONS,
            abi.XENCONS_OUT_PROD) == (3072, 3076, 3080, 3084)
    assert abi.XENCONS_CONNECTION == 3088 == o["connection"]


def test_vcpu_guest_context_user_regs_offset():
    assert abi.vcpu_guest_context_user_regs_off == 516


# ---- numbers -------------------------------------------------------------
HYPERCALLS_DOC = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
    4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op",
    8: "set_debugreg", 9: "get_debugreg", 10: "update_descriptor", 12: "memory_op",
    13: "multicall", 14: "update_va_mapping", 15: "set_timer_op",
    16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
    19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist",
    22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op", 25: "set_segment_base",
    26: "mmuext_op", 27: "xsm_op", 28: "nmi_op", 29: "sched_op", 30: "callback_op",
    31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op", 34: "hvm_op",
    35: "sysctl", 36: "domctl", 37: "kexec_op", 38: "tmem_op", 39: "argo_op",
    40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op",
}


def test_hypercall_numbers():
    assert abi.HYPERCALLS == HYPERCALLS_DOC
    assert 11 not in abi.HYPERCALLS
    for nr, name in HYPERCALLS_DOC.items():
        assert abi.HYPERCALL_NR[name] == nr
    assert abi.HYPERCALL_VECTOR == 0x82


def _subset(table, expected):
    """Every entry the table declares is the documented one."""
    for k, v in table.items():
        assert expected.get(k) == v, f"{k}: {v} (reference: {expected.get(k)})"


def test_subop_numbers():
    assert (abi.CONSOLEIO_write, abi.CONSOLEIO_read) == (0, 1)
    assert (abi.VMASST_CMD_enable, abi.VMASST_CMD_disable) == (0, 1)
    assert abi.VMASST_TYPES == {0: "4gb_segments", 1: "4gb_segments_notify",
                                2: "writable_pagetables", 3: "pae_extended_cr3",
                                4: "architectural_iopl", 5: "runstate_update_flag",
                                32: "m2p_strict"}
    assert (abi.SCHEDOP_yield, abi.SCHEDOP_block, abi.SCHEDOP_shutdown, abi.SCHEDOP_poll,
            abi.SCHEDOP_remote_shutdown, abi.SCHEDOP_shutdown_code,
            abi.SCHEDOP_watchdog) == (0, 1, 2, 3, 4, 5, 6)
    assert (abi.SHUTDOWN_poweroff, abi.SHUTDOWN_reboot, abi.SHUTDOWN_suspend,
            abi.SHUTDOWN_crash, abi.SHUTDOWN_watchdog, abi.SHUTDOWN_soft_reset) == tuple(range(6))
    assert abi.SHUTDOWN_NAMES == {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash",
                                  4: "watchdog", 5: "soft_reset"}
    _subset(abi.VCPUOP, {0: "initialise", 1: "up", 2: "down", 3: "is_up",
                         4: "get_runstate_info", 5: "register_runstate_memory_area",
                         6: "set_periodic_timer", 7: "stop_periodic_timer",
                         8: "set_singleshot_timer", 9: "stop_singleshot_timer",
                         10: "register_vcpu_info", 11: "send_nmi", 12: "get_physid",
                         13: "register_vcpu_time_memory_area",
                         14: "register_runstate_phys_area",
                         15: "register_vcpu_time_phys_area"})
    assert (abi.XENVER_version, abi.XENVER_extraversion, abi.XENVER_compile_info,
            abi.XENVER_capabilities, abi.XENVER_changeset, abi.XENVER_platform_parameters,
            abi.XENVER_get_features, abi.XENVER_pagesize, abi.XENVER_guest_handle,
            abi.XENVER_commandline, abi.XENVER_build_id) == tuple(range(11))
    assert abi.XENFEAT_NAMES == {0: "writable_page_tables", 1: "writable_descriptor_tables",
                                 2: "auto_translated_physmap", 3: "supervisor_mode_kernel",
                                 4: "pae_pgdir_above_4gb", 5: "mmu_pt_update_preserve_ad",
                                 6: "highmem_assist", 7: "gnttab_map_avail_bits",
                                 8: "hvm_callback_vector", 9: "hvm_safe_pvclock",
                                 10: "hvm_pirqs", 11: "dom0"}
    for bit, name in abi.XENFEAT_NAMES.items():
        assert getattr(abi, "XENFEAT_" + name) == bit
    _subset(abi.XENMEM, {0: "increase_reservation", 1: "decrease_reservation",
                         2: "maximum_ram_page", 3: "current_reservation",
                         4: "maximum_reservation", 5: "machphys_mfn_list",
                         6: "populate_physmap", 7: "add_to_physmap", 9: "memory_map",
                         10: "machine_memory_map", 11: "exchange", 12: "machphys_mapping",
                         13: "set_memory_map", 14: "maximum_gpfn", 15: "remove_from_physmap",
                         23: "add_to_physmap_batch"})
    assert (abi.CALLBACKOP_register, abi.CALLBACKOP_unregister) == (0, 1)
    assert (abi.CALLBACKTYPE_event, abi.CALLBACKTYPE_failsafe, abi.CALLBACKTYPE_syscall,
            abi.CALLBACKTYPE_sysenter_deprecated, abi.CALLBACKTYPE_nmi,
            abi.CALLBACKTYPE_sysenter, abi.CALLBACKTYPE_syscall32) == (0, 1, 2, 3, 4, 5, 7)
    assert (abi.MMU_NORMAL_PT_UPDATE, abi.MMU_MACHPHYS_UPDATE, abi.MMU_PT_UPDATE_PRESERVE_AD,
            abi.MMU_PT_UPDATE_NO_TRANSLATE) == (0, 1, 2, 3)
    assert abi.MMUEXT == {0: "pin_l1_table", 1: "pin_l2_table", 2: "pin_l3_table",
                          3: "pin_l4_table", 4: "unpin_table", 5: "new_baseptr",
                          6: "tlb_flush_local", 7: "invlpg_local", 8: "tlb_flush_multi",
                          9: "invlpg_multi", 10: "tlb_flush_all", 11: "invlpg_all",
                          12: "flush_cache", 13: "set_ldt", 15: "new_user_baseptr",
                          16: "clear_page", 17: "copy_page", 18: "flush_cache_global",
                          19: "mark_super", 20: "unmark_super"}
    assert (abi.UVMF_NONE, abi.UVMF_TLB_FLUSH, abi.UVMF_INVLPG) == (0, 1, 2)
    assert (abi.UVMF_MULTI, abi.UVMF_LOCAL, abi.UVMF_ALL) == (0, 0, 1 << 2)
    assert (abi.VIRQ_TIMER, abi.VIRQ_DEBUG, abi.VIRQ_CONSOLE, abi.VIRQ_DOM_EXC,
            abi.VIRQ_DEBUGGER, abi.VIRQ_CON_RING) == (0, 1, 2, 3, 6, 8)
    assert abi.NR_VIRQS == 24                       # ARCH_7 = 23 is the last
    assert (abi.DOMID_SELF, abi.DOMID_IO, abi.DOMID_XEN, abi.DOMID_COW, abi.DOMID_INVALID,
            abi.DOMID_ANY, abi.DOMID_IDLE) == (0x7FF0, 0x7FF1, 0x7FF2, 0x7FF3, 0x7FF4,
                                               0x7FF5, 0x7FFF)
    assert abi.DOMID_FIRST_RESERVED == 0x7FF0
    assert abi.EVTCHNOP == {0: "bind_interdomain", 1: "bind_virq", 2: "bind_pirq", 3: "close",
                            4: "send", 5: "status", 6: "alloc_unbound", 7: "bind_ipi",
                            8: "bind_vcpu", 9: "unmask", 10: "reset", 11: "init_control",
                            12: "expand_array", 13: "set_priority", 14: "reset_cont"}
    assert (abi.EVTCHNSTAT_closed, abi.EVTCHNSTAT_unbound, abi.EVTCHNSTAT_interdomain,
            abi.EVTCHNSTAT_pirq, abi.EVTCHNSTAT_virq, abi.EVTCHNSTAT_ipi) == tuple(range(6))
    assert (abi.GNTTAB_NR_RESERVED_ENTRIES, abi.GNTTAB_RESERVED_CONSOLE,
            abi.GNTTAB_RESERVED_XENSTORE) == (8, 0, 1)
    assert (abi.GTF_invalid, abi.GTF_permit_access, abi.GTF_accept_transfer,
            abi.GTF_transitive, abi.GTF_type_mask) == (0, 1, 2, 3, 3)
    assert (abi.GTF_readonly, abi.GTF_reading, abi.GTF_writing) == (4, 8, 16)
    assert (abi.GTF_transfer_committed, abi.GTF_transfer_completed) == (4, 8)
    assert (abi.SIF_PRIVILEGED, abi.SIF_INITDOMAIN, abi.SIF_MULTIBOOT_MOD,
            abi.SIF_MOD_START_PFN, abi.SIF_VIRT_P2M_4TOOLS) == (1, 2, 4, 8, 16)
    assert abi.XEN_ELFNOTE == {0: "INFO", 1: "ENTRY", 2: "HYPERCALL_PAGE", 3: "VIRT_BASE",
                               4: "PADDR_OFFSET", 5: "XEN_VERSION", 6: "GUEST_OS",
                               7: "GUEST_VERSION", 8: "LOADER", 9: "PAE_MODE", 10: "FEATURES",
                               11: "BSD_SYMTAB", 12: "HV_START_LOW", 13: "L1_MFN_VALID",
                               14: "SUSPEND_CANCEL", 15: "INIT_P2M", 16: "MOD_START_PFN",
                               17: "SUPPORTED_FEATURES", 18: "PHYS32_ENTRY",
                               19: "PHYS32_RELOC"}


def test_errno_values():
    assert (abi.EPERM, abi.ENOENT, abi.ESRCH, abi.EINTR, abi.EIO, abi.ENXIO, abi.E2BIG) == \
        (1, 2, 3, 4, 5, 6, 7)
    assert (abi.EAGAIN, abi.ENOMEM, abi.EACCES, abi.EFAULT, abi.EBUSY, abi.EEXIST) == \
        (11, 12, 13, 14, 16, 17)
    assert (abi.EINVAL, abi.ENOSPC, abi.ENOSYS, abi.EOPNOTSUPP) == (22, 28, 38, 95)


def test_pte_bits():
    assert (abi.PTE_P, abi.PTE_RW, abi.PTE_US, abi.PTE_PWT, abi.PTE_PCD, abi.PTE_A,
            abi.PTE_D, abi.PTE_PSE, abi.PTE_G) == (1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100)
    assert abi.PTE_AVAIL == 0xE00 and abi.PTE_NX == 1 << 63


# ---- layout constants ----------------------------------------------------
def _selector(index: int, rpl: int) -> int:
    return index << 3 | rpl


def test_flat_selectors():
    # Xen's header comments say "GDT index 259.." (from when the reserved
    # area started at entry 256); today they are entries 7168+3..7168+6.
    first = abi.FIRST_RESERVED_GDT_ENTRY
    assert abi.FLAT_RING1_CS == 0xE019 == _selector(first + 3, 1)
    assert abi.FLAT_RING1_DS == 0xE021 == _selector(first + 4, 1)
    assert abi.FLAT_RING3_CS == 0xE02B == _selector(first + 5, 3)
    assert abi.FLAT_RING3_DS == 0xE033 == _selector(first + 6, 3)
    assert (abi.FLAT_KERNEL_CS, abi.FLAT_KERNEL_DS, abi.FLAT_KERNEL_SS) == (0xE019, 0xE021, 0xE021)
    assert (abi.FLAT_USER_CS, abi.FLAT_USER_DS, abi.FLAT_USER_SS) == (0xE02B, 0xE033, 0xE033)
    # the flat selectors live in Xen's reserved GDT page
    assert abi.FIRST_RESERVED_GDT_PAGE == 14
    assert abi.FIRST_RESERVED_GDT_BYTE == 14 * 4096 == 57344
    assert abi.FIRST_RESERVED_GDT_ENTRY == 57344 // 8 == 7168
    assert abi.FLAT_RING1_CS >> 3 >= abi.FIRST_RESERVED_GDT_ENTRY


def test_address_space_constants():
    assert abi.HYPERVISOR_VIRT_START_PAE == 0xF5800000
    assert (abi.MACH2PHYS_VIRT_START_PAE, abi.MACH2PHYS_VIRT_END_PAE) == (0xF5800000, 0xF6800000)
    assert abi.HYPERVISOR_VIRT_START_NONPAE == 0xFC000000
    assert (abi.MACH2PHYS_VIRT_START_NONPAE, abi.MACH2PHYS_VIRT_END_NONPAE) == \
        (0xFC000000, 0xFC400000)
    assert abi.XEN_LEGACY_MAX_VCPUS == 32
    assert abi.MAX_GUEST_CMDLINE == 1024
    assert abi.XEN_EMULATE_PREFIX == bytes.fromhex("0f0b78656e")
    assert abi.XEN_EMULATE_PREFIX[2:] == b"xen"
    assert abi.PAGE_SIZE == 4096 and abi.PAGE_SHIFT == 12
    assert abi.INVALID_M2P_ENTRY == 0xFFFFFFFF


@pytest.mark.parametrize("pfn,cr3", [
    (0, 0), (1, 0x1000), (0x12345, 0x12345000), (0xFFFFF, 0xFFFFF000),
    (0x100000, 0x00000001),             # PDPT at 4 GiB: high bits folded into the low bits
    (0x123456, 0x23456001),
    (0xFFFFFFFF, 0xFFFFFFFF & ((0xFFFFFFFF << 12) | 0xFFF)),
])
def test_xen_pfn_to_cr3(pfn, cr3):
    assert abi.xen_pfn_to_cr3(pfn) == cr3
    assert abi.xen_pfn_to_cr3(pfn) == ((pfn << 12) | (pfn >> 20)) & 0xFFFFFFFF


@pytest.mark.parametrize("pfn", [0, 1, 0x12345, 0xFFFFF])
def test_xen_cr3_to_pfn_below_4g(pfn):
    assert abi.xen_cr3_to_pfn(abi.xen_pfn_to_cr3(pfn)) == pfn


@pytest.mark.parametrize("pfn", [0x100000, 0x123456])
def test_xen_cr3_to_pfn_above_4g(pfn):
    assert abi.xen_cr3_to_pfn(abi.xen_pfn_to_cr3(pfn)) == pfn


# ---- Layout pack/unpack against construct --------------------------------
def _sample(layout: Layout, seed: int) -> dict:
    """Distinct, width-respecting values for every named field."""
    vals = {}
    k = seed
    for sc in layout.construct.subcons:
        if not sc.name:
            continue
        sub = sc.subcon
        k += 1
        if isinstance(sub, c.FormatField):
            bits = sub.length * 8
            signed = sub.fmtstr[-1].islower()
            v = (0x0123456789ABCDEF * k) & ((1 << bits) - 1)
            if signed and v >= 1 << (bits - 1):
                v -= 1 << bits
            vals[sc.name] = v
        elif isinstance(sub, c.Array):
            bits = sub.subcon.length * 8
            vals[sc.name] = [(0x9E3779B97F4A7C15 * (k + i)) & ((1 << bits) - 1)
                             for i in range(sub.count)]
        else:
            n = sub.sizeof()
            vals[sc.name] = bytes(((k * 7 + i) & 0xFF) for i in range(n))
    return vals


ALL_LAYOUTS = [s[0] for s in STRUCTS]


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=[l.name for l in ALL_LAYOUTS])
def test_layout_pack_matches_construct_build(layout):
    vals = _sample(layout, 3)
    packed = layout.pack(vals)
    assert len(packed) == layout.size
    assert packed == layout.construct.build(vals)


@pytest.mark.parametrize("layout", ALL_LAYOUTS, ids=[l.name for l in ALL_LAYOUTS])
def test_layout_unpack_matches_construct_parse(layout):
    vals = _sample(layout, 11)
    raw = layout.construct.build(vals)
    mine = layout.unpack(raw)
    theirs = layout.parse(raw)
    assert mine == vals
    for k in mine:
        v = theirs[k]
        assert (list(v) if isinstance(v, c.ListContainer) else v) == mine[k]


def test_layout_unpack_at_offset_and_defaults():
    buf = bytearray(64) + abi.trap_info.pack({"vector": 14, "flags": 4, "cs": 0xE019,
                                               "address": 0xC0101234})
    assert abi.trap_info.unpack(buf, 64) == {"vector": 14, "flags": 4, "cs": 0xE019,
                                             "address": 0xC0101234}
    # missing fields pack as zero / empty, arrays are padded
    assert abi.multicall_entry.pack({"op": 1, "args": [7]}) == \
        struct.pack("<8I", 1, 0, 7, 0, 0, 0, 0, 0)
    assert abi.start_info.pack({})[:32] == bytes(32)
    assert abi.start_info.pack({"magic": b"xen-3.0-x86_32p"})[:16] == b"xen-3.0-x86_32p\0"


def test_layout_rejects_unsupported_fields():
    with pytest.raises(TypeError):
        Layout("bad", ("x", c.Int24ul))
    with pytest.raises(TypeError):
        Layout("bad", ("x", c.Array(2, c.Bytes(3))))


def test_layout_signed_fields():
    lay = abi.vcpu_time_info
    raw = lay.pack({"tsc_shift": -3, "tsc_to_system_mul": 0xFFFFFFFF})
    assert raw[28] == 0xFD
    assert lay.unpack(raw)["tsc_shift"] == -3
    assert lay.parse(raw).tsc_shift == -3
