"""The Xen public ABI for 32-bit x86 guests, declared once.

Numbers, offsets and sizes from xen/include/public (see
../shared/xen-abi-i686.md); tests/unit/test_abi.py checks every size and
offset listed there.  On i386 ``unsigned long`` and handles are 4 bytes and
``uint64_t`` is 4-byte aligned inside structures.
"""

from __future__ import annotations

import construct as c

from .layout import Layout

U8, U16, U32, U64 = c.Int8ul, c.Int16ul, c.Int32ul, c.Int64ul
S16, S32 = c.Int16sl, c.Int32sl

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# ---- errno values as Xen returns them (negated) -------------------------
EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG = 1, 2, 3, 4, 5, 6, 7
EBADF, ECHILD, EAGAIN, ENOMEM, EACCES, EFAULT = 9, 10, 11, 12, 13, 14
EBUSY, EEXIST, EXDEV, ENODEV, EINVAL, ENOSPC = 16, 17, 18, 19, 22, 28
ENOSYS, ENOTEMPTY, EOPNOTSUPP, ENOBUFS, EALREADY = 38, 39, 95, 105, 114
ERANGE, EDOM = 34, 33

# ---- hypercall numbers (xen.h) ------------------------------------------
HYPERCALLS = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
    4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op_compat",
    7: "platform_op", 8: "set_debugreg", 9: "get_debugreg",
    10: "update_descriptor", 12: "memory_op", 13: "multicall",
    14: "update_va_mapping", 15: "set_timer_op", 16: "event_channel_op_compat",
    17: "xen_version", 18: "console_io", 19: "physdev_op_compat",
    20: "grant_table_op", 21: "vm_assist", 22: "update_va_mapping_otherdomain",
    23: "iret", 24: "vcpu_op", 25: "set_segment_base", 26: "mmuext_op",
    27: "xsm_op", 28: "nmi_op", 29: "sched_op", 30: "callback_op",
    31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op", 34: "hvm_op",
    35: "sysctl", 36: "domctl", 37: "kexec_op", 38: "tmem_op", 39: "argo_op",
    40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op",
}
HYPERCALL_NR = {name: nr for nr, name in HYPERCALLS.items()}
HYPERCALL_VECTOR = 0x82

# ---- sub-op numbers ----
CONSOLEIO_write, CONSOLEIO_read = 0, 1
VMASST_CMD_enable, VMASST_CMD_disable = 0, 1
VMASST_TYPES = {0: "4gb_segments", 1: "4gb_segments_notify", 2: "writable_pagetables",
                3: "pae_extended_cr3", 4: "architectural_iopl", 5: "runstate_update_flag",
                32: "m2p_strict"}
SCHEDOP_yield, SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_poll = 0, 1, 2, 3
SCHEDOP_remote_shutdown, SCHEDOP_shutdown_code, SCHEDOP_watchdog = 4, 5, 6
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend = 0, 1, 2
SHUTDOWN_crash, SHUTDOWN_watchdog, SHUTDOWN_soft_reset = 3, 4, 5
SHUTDOWN_NAMES = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash",
                  4: "watchdog", 5: "soft_reset"}
VCPUOP = {0: "initialise", 1: "up", 2: "down", 3: "is_up", 4: "get_runstate_info",
          5: "register_runstate_memory_area", 6: "set_periodic_timer",
          7: "stop_periodic_timer", 8: "set_singleshot_timer", 9: "stop_singleshot_timer",
          10: "register_vcpu_info", 11: "send_nmi", 12: "get_physid",
          13: "register_vcpu_time_memory_area"}
XENVER_version, XENVER_extraversion, XENVER_compile_info = 0, 1, 2
XENVER_capabilities, XENVER_changeset, XENVER_platform_parameters = 3, 4, 5
XENVER_get_features, XENVER_pagesize, XENVER_guest_handle = 6, 7, 8
XENVER_commandline, XENVER_build_id = 9, 10
XENFEAT_writable_page_tables, XENFEAT_writable_descriptor_tables = 0, 1
XENFEAT_auto_translated_physmap, XENFEAT_supervisor_mode_kernel = 2, 3
XENFEAT_pae_pgdir_above_4gb, XENFEAT_mmu_pt_update_preserve_ad = 4, 5
XENFEAT_highmem_assist, XENFEAT_gnttab_map_avail_bits = 6, 7
XENFEAT_hvm_callback_vector, XENFEAT_hvm_safe_pvclock, XENFEAT_hvm_pirqs = 8, 9, 10
XENFEAT_dom0 = 11
XENFEAT_NAMES = {0: "writable_page_tables", 1: "writable_descriptor_tables",
                 2: "auto_translated_physmap", 3: "supervisor_mode_kernel",
                 4: "pae_pgdir_above_4gb", 5: "mmu_pt_update_preserve_ad",
                 6: "highmem_assist", 7: "gnttab_map_avail_bits",
                 8: "hvm_callback_vector", 9: "hvm_safe_pvclock", 10: "hvm_pirqs",
                 11: "dom0"}
XENMEM = {0: "increase_reservation", 1: "decrease_reservation", 2: "maximum_ram_page",
          3: "current_reservation", 4: "maximum_reservation", 5: "machphys_mfn_list",
          6: "populate_physmap", 7: "add_to_physmap", 9: "memory_map",
          10: "machine_memory_map", 11: "exchange", 12: "machphys_mapping",
          13: "set_memory_map", 14: "maximum_gpfn", 15: "remove_from_physmap"}
CALLBACKOP_register, CALLBACKOP_unregister = 0, 1
CALLBACKTYPE_event, CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall = 0, 1, 2
CALLBACKTYPE_sysenter_deprecated, CALLBACKTYPE_nmi, CALLBACKTYPE_sysenter = 3, 4, 5
CALLBACKTYPE_syscall32 = 7
CALLBACKF_mask_events = 1
MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD = 0, 1, 2
MMU_PT_UPDATE_NO_TRANSLATE = 3
MMUEXT = {0: "pin_l1_table", 1: "pin_l2_table", 2: "pin_l3_table", 3: "pin_l4_table",
          4: "unpin_table", 5: "new_baseptr", 6: "tlb_flush_local", 7: "invlpg_local",
          8: "tlb_flush_multi", 9: "invlpg_multi", 10: "tlb_flush_all", 11: "invlpg_all",
          12: "flush_cache", 13: "set_ldt", 15: "new_user_baseptr", 16: "clear_page",
          17: "copy_page", 18: "flush_cache_global", 19: "mark_super", 20: "unmark_super"}
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3
UVMF_MULTI, UVMF_LOCAL, UVMF_ALL = 0, 0, 4
VIRQ_TIMER, VIRQ_DEBUG, VIRQ_CONSOLE, VIRQ_DOM_EXC = 0, 1, 2, 3
VIRQ_DEBUGGER, VIRQ_CON_RING = 6, 8
NR_VIRQS = 24
DOMID_SELF, DOMID_IO, DOMID_XEN, DOMID_COW = 0x7FF0, 0x7FF1, 0x7FF2, 0x7FF3
DOMID_INVALID, DOMID_ANY, DOMID_IDLE = 0x7FF4, 0x7FF5, 0x7FFF
DOMID_FIRST_RESERVED = 0x7FF0

# ---- x86_32 layout ------------------------------------------------------
HYPERVISOR_VIRT_START_PAE = 0xF5800000
MACH2PHYS_VIRT_START_PAE, MACH2PHYS_VIRT_END_PAE = 0xF5800000, 0xF6800000
HYPERVISOR_VIRT_START_NONPAE = 0xFC000000
MACH2PHYS_VIRT_START_NONPAE, MACH2PHYS_VIRT_END_NONPAE = 0xFC000000, 0xFC400000
FLAT_RING1_CS, FLAT_RING1_DS = 0xE019, 0xE021
FLAT_RING3_CS, FLAT_RING3_DS = 0xE02B, 0xE033
FLAT_KERNEL_CS, FLAT_KERNEL_DS, FLAT_KERNEL_SS = FLAT_RING1_CS, FLAT_RING1_DS, FLAT_RING1_DS
FLAT_USER_CS, FLAT_USER_DS, FLAT_USER_SS = FLAT_RING3_CS, FLAT_RING3_DS, FLAT_RING3_DS
FIRST_RESERVED_GDT_PAGE, FIRST_RESERVED_GDT_BYTE, FIRST_RESERVED_GDT_ENTRY = 14, 57344, 7168
XEN_LEGACY_MAX_VCPUS = 32
MAX_GUEST_CMDLINE = 1024
XEN_EMULATE_PREFIX = bytes([0x0F, 0x0B, 0x78, 0x65, 0x6E])
INVALID_M2P_ENTRY = 0xFFFFFFFF

SIF_PRIVILEGED, SIF_INITDOMAIN, SIF_MULTIBOOT_MOD = 1 << 0, 1 << 1, 1 << 2
SIF_MOD_START_PFN, SIF_VIRT_P2M_4TOOLS = 1 << 3, 1 << 4


def xen_pfn_to_cr3(pfn: int) -> int:
    return ((pfn << 12) | (pfn >> 20)) & 0xFFFFFFFF


def xen_cr3_to_pfn(cr3: int) -> int:
    return ((cr3 >> 12) | (cr3 << 20)) & 0xFFFFFFFF


# ---- structures ---------------------------------------------------------
start_info = Layout(
    "start_info",
    ("magic", c.Bytes(32)), ("nr_pages", U32), ("shared_info", U32), ("flags", U32),
    ("store_mfn", U32), ("store_evtchn", U32), ("console_mfn", U32),
    ("console_evtchn", U32), ("pt_base", U32), ("nr_pt_frames", U32),
    ("mfn_list", U32), ("mod_start", U32), ("mod_len", U32),
    ("cmd_line", c.Bytes(MAX_GUEST_CMDLINE)), ("first_p2m_pfn", U32),
    ("nr_p2m_frames", U32),
)

vcpu_time_info = Layout(
    "vcpu_time_info",
    ("version", U32), (None, c.Padding(4)), ("tsc_timestamp", U64), ("system_time", U64),
    ("tsc_to_system_mul", U32), ("tsc_shift", c.Int8sl), ("flags", U8), (None, c.Padding(2)),
)

vcpu_info = Layout(
    "vcpu_info",
    ("evtchn_upcall_pending", U8), ("evtchn_upcall_mask", U8), (None, c.Padding(2)),
    ("evtchn_pending_sel", U32), ("cr2", U32), (None, c.Padding(20)),
    ("time", c.Bytes(32)),
)
VCPU_INFO_SIZE = 64
VI_UPCALL_PENDING, VI_UPCALL_MASK, VI_PENDING_SEL, VI_CR2, VI_TIME = 0, 1, 4, 8, 32

shared_info = Layout(
    "shared_info",
    ("vcpu_info", c.Bytes(64 * XEN_LEGACY_MAX_VCPUS)),
    ("evtchn_pending", c.Array(32, U32)), ("evtchn_mask", c.Array(32, U32)),
    ("wc_version", U32), ("wc_sec", U32), ("wc_nsec", U32),
    ("max_pfn", U32), ("pfn_to_mfn_frame_list_list", U32), ("nmi_reason", U32),
    ("p2m_cr3", U32), ("p2m_vaddr", U32), ("p2m_generation", U32), ("wc_sec_hi", U32),
)
SI_EVTCHN_PENDING, SI_EVTCHN_MASK = 2048, 2176
SI_WC_VERSION, SI_WC_SEC, SI_WC_NSEC, SI_MAX_PFN = 2304, 2308, 2312, 2316
SI_WC_SEC_HI = 2340
EVTCHN_2L_NR_CHANNELS = 1024

cpu_user_regs = Layout(
    "cpu_user_regs",
    ("ebx", U32), ("ecx", U32), ("edx", U32), ("esi", U32), ("edi", U32),
    ("ebp", U32), ("eax", U32), ("error_code", U16), ("entry_vector", U16),
    ("eip", U32), ("cs", U16), ("saved_upcall_mask", U8), (None, c.Padding(1)),
    ("eflags", U32), ("esp", U32), ("ss", U32), ("es", U32), ("ds", U32),
    ("fs", U32), ("gs", U32),
)

trap_info = Layout("trap_info", ("vector", U8), ("flags", U8), ("cs", U16), ("address", U32))
multicall_entry = Layout("multicall_entry", ("op", U32), ("result", U32), ("args", c.Array(6, U32)))
mmu_update = Layout("mmu_update", ("ptr", U64), ("val", U64))
mmuext_op = Layout("mmuext_op", ("cmd", U32), ("arg1", U32), ("arg2", U32))
sched_shutdown = Layout("sched_shutdown", ("reason", U32))
sched_poll = Layout("sched_poll", ("ports", U32), ("nr_ports", U32), ("timeout", U64))
sched_remote_shutdown = Layout("sched_remote_shutdown", ("domain_id", U16),
                               (None, c.Padding(2)), ("reason", U32))
callback_register = Layout("callback_register", ("type", U16), ("flags", U16),
                           ("cs", U32), ("eip", U32))
callback_unregister = Layout("callback_unregister", ("type", U16), (None, c.Padding(2)))
xen_feature_info = Layout("xen_feature_info", ("submap_idx", U32), ("submap", U32))
xen_platform_parameters = Layout("xen_platform_parameters", ("virt_start", U32))
vcpu_register_vcpu_info = Layout("vcpu_register_vcpu_info", ("mfn", U64),
                                 ("offset", U32), ("rsvd", U32))
vcpu_set_singleshot_timer = Layout("vcpu_set_singleshot_timer", ("timeout_abs_ns", U64),
                                   ("flags", U32))
vcpu_set_periodic_timer = Layout("vcpu_set_periodic_timer", ("period_ns", U64))
vcpu_runstate_info = Layout("vcpu_runstate_info", ("state", U32), ("state_entry_time", U64),
                            ("time", c.Array(4, U64)))
xen_memory_reservation = Layout(
    "xen_memory_reservation",
    ("extent_start", U32), ("nr_extents", U32), ("extent_order", U32),
    ("mem_flags", U32), ("domid", U16), (None, c.Padding(2)),
)
xen_memory_map = Layout("xen_memory_map", ("nr_entries", U32), ("buffer", U32))
e820_entry = Layout("e820_entry", ("addr", U64), ("size", U64), ("type", U32))
xen_machphys_mfn_list = Layout("xen_machphys_mfn_list", ("max_extents", U32),
                               ("extent_start", U32), ("nr_extents", U32))
xen_machphys_mapping = Layout("xen_machphys_mapping", ("v_start", U32), ("v_end", U32),
                              ("max_mfn", U32))
xen_add_to_physmap = Layout("xen_add_to_physmap", ("domid", U16), ("size", U16),
                            ("space", U32), ("idx", U32), ("gpfn", U32))
xen_hvm_param = Layout("xen_hvm_param", ("domid", U16), (None, c.Padding(2)),
                       ("index", U32), ("value", U64))
vcpu_guest_context_user_regs_off = 516

# ---- event channels (event_channel.h) ----
EVTCHNOP = {0: "bind_interdomain", 1: "bind_virq", 2: "bind_pirq", 3: "close", 4: "send",
            5: "status", 6: "alloc_unbound", 7: "bind_ipi", 8: "bind_vcpu", 9: "unmask",
            10: "reset", 11: "init_control", 12: "expand_array", 13: "set_priority",
            14: "reset_cont"}
EVTCHNSTAT_closed, EVTCHNSTAT_unbound, EVTCHNSTAT_interdomain = 0, 1, 2
EVTCHNSTAT_pirq, EVTCHNSTAT_virq, EVTCHNSTAT_ipi = 3, 4, 5
evtchn_alloc_unbound = Layout("evtchn_alloc_unbound", ("dom", U16), ("remote_dom", U16),
                              ("port", U32))
evtchn_bind_interdomain = Layout("evtchn_bind_interdomain", ("remote_dom", U16),
                                 (None, c.Padding(2)), ("remote_port", U32), ("local_port", U32))
evtchn_bind_virq = Layout("evtchn_bind_virq", ("virq", U32), ("vcpu", U32), ("port", U32))
evtchn_bind_pirq = Layout("evtchn_bind_pirq", ("pirq", U32), ("flags", U32), ("port", U32))
evtchn_bind_ipi = Layout("evtchn_bind_ipi", ("vcpu", U32), ("port", U32))
evtchn_port_op = Layout("evtchn_port", ("port", U32))       # close, send, unmask
evtchn_status = Layout("evtchn_status", ("dom", U16), (None, c.Padding(2)), ("port", U32),
                       ("status", U32), ("vcpu", U32), ("u0", U32), ("u1", U32))
evtchn_bind_vcpu = Layout("evtchn_bind_vcpu", ("port", U32), ("vcpu", U32))
evtchn_reset = Layout("evtchn_reset", ("dom", U16))
evtchn_op_compat = Layout("evtchn_op", ("cmd", U32), ("u", c.Bytes(24)))

# ---- grant tables (grant_table.h) ----
grant_entry_v1 = Layout("grant_entry_v1", ("flags", U16), ("domid", U16), ("frame", U32))
GNTTAB_NR_RESERVED_ENTRIES, GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE = 8, 0, 1
GTF_invalid, GTF_permit_access, GTF_accept_transfer, GTF_transitive = 0, 1, 2, 3
GTF_type_mask, GTF_readonly, GTF_reading, GTF_writing = 3, 1 << 2, 1 << 3, 1 << 4
GTF_transfer_committed, GTF_transfer_completed = 1 << 2, 1 << 3
GTF_PWT, GTF_PCD, GTF_PAT, GTF_sub_page = 1 << 5, 1 << 6, 1 << 7, 1 << 8
GNTTABOP = {0: "map_grant_ref", 1: "unmap_grant_ref", 2: "setup_table", 3: "dump_table",
            4: "transfer", 5: "copy", 6: "query_size", 7: "unmap_and_replace",
            8: "set_version", 9: "get_status_frames", 10: "get_version",
            11: "swap_grant_ref", 12: "cache_flush"}
GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly = 1 << 0, 1 << 1, 1 << 2
GNTMAP_application_map, GNTMAP_contains_pte = 1 << 3, 1 << 4
GNTCOPY_source_gref, GNTCOPY_dest_gref = 1 << 0, 1 << 1
GNTST = {0: "okay", -1: "general_error", -2: "bad_domain", -3: "bad_gntref",
         -4: "bad_handle", -5: "bad_virt_addr", -6: "bad_dev_addr", -7: "no_device_space",
         -8: "permission_denied", -9: "bad_page", -10: "bad_copy_arg",
         -11: "address_too_big", -12: "eagain", -13: "no_space"}
gnttab_setup_table = Layout("gnttab_setup_table", ("dom", U16), (None, c.Padding(2)),
                            ("nr_frames", U32), ("status", S16), (None, c.Padding(2)),
                            ("frame_list", U32))
gnttab_query_size = Layout("gnttab_query_size", ("dom", U16), (None, c.Padding(2)),
                           ("nr_frames", U32), ("max_nr_frames", U32), ("status", S16),
                           (None, c.Padding(2)))
gnttab_map_grant_ref = Layout("gnttab_map_grant_ref", ("host_addr", U64), ("flags", U32),
                              ("ref", U32), ("dom", U16), ("status", S16), ("handle", U32),
                              ("dev_bus_addr", U64))
gnttab_unmap_grant_ref = Layout("gnttab_unmap_grant_ref", ("host_addr", U64),
                                ("dev_bus_addr", U64), ("handle", U32), ("status", S16),
                                (None, c.Padding(2)))
gnttab_copy = Layout("gnttab_copy", ("source_u", U32), ("source_domid", U16),
                     ("source_offset", U16), ("dest_u", U32), ("dest_domid", U16),
                     ("dest_offset", U16), ("len", U16), ("flags", U16), ("status", S16),
                     (None, c.Padding(2)))
gnttab_transfer = Layout("gnttab_transfer", ("mfn", U32), ("domid", U16), (None, c.Padding(2)),
                         ("ref", U32), ("status", S16), (None, c.Padding(2)))
gnttab_set_version = Layout("gnttab_set_version", ("version", U32))
gnttab_get_version = Layout("gnttab_get_version", ("dom", U16), (None, c.Padding(2)),
                            ("version", U32))
gnttab_get_status_frames = Layout("gnttab_get_status_frames", ("nr_frames", U32),
                                  ("dom", U16), ("status", S16), ("frame_list", U32))
gnttab_swap_grant_ref = Layout("gnttab_swap_grant_ref", ("ref_a", U32), ("ref_b", U32),
                               ("status", S16), (None, c.Padding(2)))

# ---- console ring (io/console.h) ----
XENCONS_IN, XENCONS_OUT = 0, 1024
XENCONS_IN_SIZE, XENCONS_OUT_SIZE = 1024, 2048
XENCONS_IN_CONS, XENCONS_IN_PROD, XENCONS_OUT_CONS, XENCONS_OUT_PROD = 3072, 3076, 3080, 3084
XENCONS_CONNECTION = 3088
xencons_interface = Layout(
    "xencons_interface",
    ("in", c.Bytes(1024)), ("out", c.Bytes(2048)), ("in_cons", U32), ("in_prod", U32),
    ("out_cons", U32), ("out_prod", U32), ("connection", U8), (None, c.Padding(3)),
)

# ---- ELF notes (elfnote.h), name "Xen" ----
XEN_ELFNOTE = {0: "INFO", 1: "ENTRY", 2: "HYPERCALL_PAGE", 3: "VIRT_BASE",
               4: "PADDR_OFFSET", 5: "XEN_VERSION", 6: "GUEST_OS", 7: "GUEST_VERSION",
               8: "LOADER", 9: "PAE_MODE", 10: "FEATURES", 11: "BSD_SYMTAB",
               12: "HV_START_LOW", 13: "L1_MFN_VALID", 14: "SUSPEND_CANCEL",
               15: "INIT_P2M", 16: "MOD_START_PFN", 17: "SUPPORTED_FEATURES",
               18: "PHYS32_ENTRY", 19: "PHYS32_RELOC"}

# ---- x86 page-table entry bits ----
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD = 0x1, 0x2, 0x4, 0x8, 0x10
PTE_A, PTE_D, PTE_PSE, PTE_PAT, PTE_G = 0x20, 0x40, 0x80, 0x80, 0x100
PTE_AVAIL = 0xE00
PTE_NX = 1 << 63
