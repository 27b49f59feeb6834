/*
 * More of the Xen guest ABI than the base library needs: what the ABI
 * test guests (abitest, isolation) exercise.  Same sources as xen-abi.h
 * (shared/xen-abi-i686.md, Xen's public headers); sizes checked below.
 *
 * Each constant is guarded so that xen-abi.h may grow the same names.
 */
#ifndef XEN_ABI_EXT_H
#define XEN_ABI_EXT_H

#include "xen-abi.h"

/* ---- Hypercall numbers (xen.h) -------------------------------------- */
#ifndef __HYPERVISOR_set_gdt
#define __HYPERVISOR_set_gdt                     2
#endif
#ifndef __HYPERVISOR_stack_switch
#define __HYPERVISOR_stack_switch                3
#endif
#ifndef __HYPERVISOR_set_callbacks
#define __HYPERVISOR_set_callbacks               4
#endif
#ifndef __HYPERVISOR_fpu_taskswitch
#define __HYPERVISOR_fpu_taskswitch              5
#endif
#ifndef __HYPERVISOR_set_debugreg
#define __HYPERVISOR_set_debugreg                8
#endif
#ifndef __HYPERVISOR_get_debugreg
#define __HYPERVISOR_get_debugreg                9
#endif
#ifndef __HYPERVISOR_update_descriptor
#define __HYPERVISOR_update_descriptor          10
#endif
#ifndef __HYPERVISOR_memory_op
#define __HYPERVISOR_memory_op                  12
#endif
#ifndef __HYPERVISOR_multicall
#define __HYPERVISOR_multicall                  13
#endif
#ifndef __HYPERVISOR_update_va_mapping_otherdomain
#define __HYPERVISOR_update_va_mapping_otherdomain 22
#endif
#ifndef __HYPERVISOR_vcpu_op
#define __HYPERVISOR_vcpu_op                    24
#endif
#ifndef __HYPERVISOR_mmuext_op
#define __HYPERVISOR_mmuext_op                  26
#endif
#ifndef __HYPERVISOR_physdev_op
#define __HYPERVISOR_physdev_op                 33
#endif
#ifndef __HYPERVISOR_grant_table_op
#define __HYPERVISOR_grant_table_op             20
#endif

/* ---- Segments (arch-x86/xen-x86_32.h) ------------------------------- */
#ifndef FLAT_USER_CS
#define FLAT_USER_CS            0xe02b  /* ring 3 flat code, GDT entry 261 */
#endif
#ifndef FLAT_USER_DS
#define FLAT_USER_DS            0xe033  /* ring 3 flat data, GDT entry 262 */
#endif
#ifndef FLAT_USER_SS
#define FLAT_USER_SS            FLAT_USER_DS
#endif
#ifndef FIRST_RESERVED_GDT_ENTRY
#define FIRST_RESERVED_GDT_ENTRY 7168
#endif

/* ---- mmu_update / mmuext_op (xen.h) --------------------------------- */
#ifndef MMU_MACHPHYS_UPDATE
#define MMU_MACHPHYS_UPDATE         1
#endif
#ifndef MMU_PT_UPDATE_PRESERVE_AD
#define MMU_PT_UPDATE_PRESERVE_AD   2
#endif
#ifndef MMU_PT_UPDATE_NO_TRANSLATE
#define MMU_PT_UPDATE_NO_TRANSLATE  3
#endif

#define MMUEXT_PIN_L1_TABLE      0
#define MMUEXT_PIN_L2_TABLE      1
#define MMUEXT_PIN_L3_TABLE      2
#define MMUEXT_PIN_L4_TABLE      3
#define MMUEXT_UNPIN_TABLE       4
#define MMUEXT_NEW_BASEPTR       5
#define MMUEXT_TLB_FLUSH_LOCAL   6
#define MMUEXT_INVLPG_LOCAL      7
#define MMUEXT_TLB_FLUSH_MULTI   8
#define MMUEXT_INVLPG_MULTI      9
#define MMUEXT_TLB_FLUSH_ALL    10
#define MMUEXT_INVLPG_ALL       11
#define MMUEXT_FLUSH_CACHE      12
#define MMUEXT_SET_LDT          13
#define MMUEXT_NEW_USER_BASEPTR 15
#define MMUEXT_CLEAR_PAGE       16
#define MMUEXT_COPY_PAGE        17
#define MMUEXT_FLUSH_CACHE_GLOBAL 18
#define MMUEXT_MARK_SUPER       19
#define MMUEXT_UNMARK_SUPER     20

#ifndef UVMF_FLUSHTYPE_MASK
#define UVMF_FLUSHTYPE_MASK     3
#endif
#ifndef UVMF_MULTI
#define UVMF_MULTI              0       /* flags | (unsigned long)vcpumask */
#endif
#ifndef UVMF_LOCAL
#define UVMF_LOCAL              0
#endif
#ifndef UVMF_ALL
#define UVMF_ALL                (1U << 2)
#endif

#define MMU_UPDATE_PREEMPTED    (1U << 31)

/* ---- memory_op (memory.h) ------------------------------------------- */
#define XENMEM_increase_reservation  0
#define XENMEM_decrease_reservation  1
#define XENMEM_maximum_ram_page      2
#define XENMEM_current_reservation   3
#define XENMEM_maximum_reservation   4
#define XENMEM_machphys_mfn_list     5
#define XENMEM_populate_physmap      6
#define XENMEM_memory_map            9
#define XENMEM_exchange             11
#define XENMEM_machphys_mapping     12
#define XENMEM_maximum_gpfn         14

/* ---- vm_assist ------------------------------------------------------ */
#define VMASST_TYPE_4gb_segments         0
#define VMASST_TYPE_4gb_segments_notify  1
#define VMASST_TYPE_pae_extended_cr3     3
#define VMASST_TYPE_architectural_iopl   4
#define VMASST_TYPE_runstate_update_flag 5
#define VMASST_TYPE_m2p_strict          32

/* ---- sched_op / vcpu_op / physdev_op / events ----------------------- */
#ifndef SCHEDOP_poll
#define SCHEDOP_poll            3
#endif
#define VCPUOP_is_up                 3
#define VCPUOP_get_runstate_info     4
#define VCPUOP_set_periodic_timer    6
#define VCPUOP_stop_periodic_timer   7
#define VCPUOP_set_singleshot_timer  8
#define VCPUOP_stop_singleshot_timer 9
#define VCPU_SSHOTTMR_future         (1U << 0)
#define VCPUOP_register_vcpu_info    10

#define PHYSDEVOP_set_iopl      6
#define PHYSDEVOP_set_iobitmap  7

#ifndef EVTCHNOP_close
#define EVTCHNOP_close          3
#endif
#ifndef EVTCHNOP_status
#define EVTCHNOP_status         5
#endif
#ifndef EVTCHNOP_alloc_unbound
#define EVTCHNOP_alloc_unbound  6
#endif
#ifndef EVTCHNOP_bind_ipi
#define EVTCHNOP_bind_ipi       7
#endif
#ifndef EVTCHNOP_unmask
#define EVTCHNOP_unmask         9
#endif

#ifndef CALLBACKOP_unregister
#define CALLBACKOP_unregister   1
#endif

#ifndef DOMID_IO
#define DOMID_IO                0x7FF1
#endif
#ifndef DOMID_XEN
#define DOMID_XEN               0x7FF2
#endif

#ifndef _PAGE_PSE
#define _PAGE_PSE               0x080
#endif
#ifndef _PAGE_PWT
#define _PAGE_PWT               0x008
#endif
#ifndef _PAGE_PCD
#define _PAGE_PCD               0x010
#endif
#ifndef _PAGE_GLOBAL
#define _PAGE_GLOBAL            0x100
#endif

/* Page-table geometry of the build's paging mode. */
#ifdef CONFIG_PAE
#define PTES_PER_PAGE           512
#define L2_SHIFT                21
#else
#define PTES_PER_PAGE           1024
#define L2_SHIFT                22
#endif
/* First L2 slot (of the top-most L2 in PAE) that belongs to Xen. */
#define FIRST_XEN_L2_SLOT       ((unsigned int)((HYPERVISOR_VIRT_START >> L2_SHIFT) & (PTES_PER_PAGE - 1)))

/* More of Xen's errno values (xen/include/public/errno.h). */
#define XEN_ENOENT              2
#define XEN_ESRCH               3
#define XEN_ENOMEM              12
#define XEN_EACCES              13
#define XEN_EBUSY               16
#define XEN_EEXIST              17
#define XEN_ENODEV              19
#define XEN_ETIME               62
#define XEN_EOPNOTSUPP          95

#ifndef __ASSEMBLER__

#ifdef CONFIG_PAE
typedef uint64_t pte_t;
#else
typedef uint32_t pte_t;
#endif

struct vcpu_register_vcpu_info {
    uint64_t mfn;
    uint32_t offset;
    uint32_t rsvd;
};
_Static_assert(sizeof(struct vcpu_register_vcpu_info) == 16, "vcpu_register_vcpu_info");

struct mmuext_op {
    uint32_t cmd;
    uint32_t arg1;              /* mfn or linear_addr */
    uint32_t arg2;              /* nr_ents, vcpumask or src_mfn */
};

struct multicall_entry {
    uint32_t op;
    int32_t  result;
    uint32_t args[6];
};

struct xen_memory_reservation {
    uint32_t extent_start;      /* XEN_GUEST_HANDLE(xen_pfn_t) */
    uint32_t nr_extents;
    uint32_t extent_order;
    uint32_t mem_flags;
    uint16_t domid;
    uint16_t pad;
};

struct xen_memory_exchange {
    struct xen_memory_reservation in;
    struct xen_memory_reservation out;
    uint32_t nr_exchanged;
};

struct xen_memory_map {
    uint32_t nr_entries;
    uint32_t buffer;            /* XEN_GUEST_HANDLE(void) of e820 entries */
};

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

struct xen_machphys_mfn_list {
    uint32_t max_extents;
    uint32_t extent_start;      /* XEN_GUEST_HANDLE(xen_pfn_t) */
    uint32_t nr_extents;        /* OUT: extents written */
};

struct xen_machphys_mapping {
    uint32_t v_start, v_end;
    uint32_t max_mfn;
};

struct sched_poll {
    uint32_t ports;             /* XEN_GUEST_HANDLE(evtchn_port_t) */
    uint32_t nr_ports;
    uint64_t timeout;
};

struct vcpu_set_periodic_timer {
    uint64_t period_ns;
};

struct vcpu_set_singleshot_timer {
    uint64_t timeout_abs_ns;
    uint32_t flags;
};

struct vcpu_runstate_info {
    int32_t  state;
    uint64_t state_entry_time;
    uint64_t time[4];
};

struct physdev_set_iopl {
    uint32_t iopl;
};

struct physdev_set_iobitmap {
    uint32_t bitmap;            /* XEN_GUEST_HANDLE(uint8) */
    uint32_t nr_ports;
};

struct evtchn_alloc_unbound {
    domid_t dom, remote_dom;
    evtchn_port_t port;
};

struct evtchn_bind_ipi {
    uint32_t vcpu;
    evtchn_port_t port;
};

struct evtchn_port_op {             /* close, unmask, send */
    evtchn_port_t port;
};

struct evtchn_status {
    domid_t dom;
    evtchn_port_t port;
    uint32_t status;
    uint32_t vcpu;
    uint32_t u[2];
};

#define ABI_EXT_SIZE(type, size) \
    _Static_assert(sizeof(type) == (size), "sizeof(" #type ") must be " #size)
ABI_EXT_SIZE(struct mmuext_op, 12);
ABI_EXT_SIZE(struct multicall_entry, 32);
ABI_EXT_SIZE(struct xen_memory_reservation, 20);
ABI_EXT_SIZE(struct xen_memory_exchange, 44);
ABI_EXT_SIZE(struct e820_entry, 20);
ABI_EXT_SIZE(struct sched_poll, 16);
ABI_EXT_SIZE(struct vcpu_set_singleshot_timer, 12);
ABI_EXT_SIZE(struct vcpu_runstate_info, 44);
ABI_EXT_SIZE(struct physdev_set_iobitmap, 8);
ABI_EXT_SIZE(struct evtchn_status, 24);
#undef ABI_EXT_SIZE

#endif /* !__ASSEMBLER__ */
#endif /* XEN_ABI_EXT_H */
