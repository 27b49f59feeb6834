/*
 * Our own declarations of the pieces of the Xen guest ABI we use, for a
 * 32-bit PAE PV guest (i386, "xen-3.0-x86_32p").
 *
 * Written from the facts in shared/xen-abi-i686.md (which cites Xen's
 * xen/include/public/ headers); every size and offset is checked below
 * with _Static_assert.  Only what this library needs is declared.
 *
 * This file is included from assembly too: constants first, C types after.
 */
#ifndef XEN_ABI_H
#define XEN_ABI_H

/* ---- Hypercall numbers (xen.h) -------------------------------------- */
#define __HYPERVISOR_set_trap_table      0
#define __HYPERVISOR_mmu_update          1
#define __HYPERVISOR_update_va_mapping  14
#define __HYPERVISOR_set_timer_op       15
#define __HYPERVISOR_xen_version        17
#define __HYPERVISOR_console_io         18
#define __HYPERVISOR_vm_assist          21
#define __HYPERVISOR_iret               23
#define __HYPERVISOR_sched_op           29
#define __HYPERVISOR_callback_op        30
#define __HYPERVISOR_event_channel_op   32

/* Each hypercall has a 32-byte stub in the hypercall page. */
#define HYPERCALL_STUB_SIZE             32

/* ---- Segments and address space (arch-x86/xen-x86_32.h) ------------- */
#define FLAT_KERNEL_CS          0xe019  /* ring 1 flat code, GDT entry 259 */
#define FLAT_KERNEL_DS          0xe021  /* ring 1 flat data, GDT entry 260 */
#define FLAT_KERNEL_SS          FLAT_KERNEL_DS

/*
 * Paging mode: PAE ("xen-3.0-x86_32p", 3 levels, 8-byte entries) unless the
 * build asks for the legacy non-PAE ABI with -DCONFIG_NONPAE
 * ("xen-3.0-x86_32", 2 levels, 4-byte entries, hole at 0xFC000000).
 */
#if !defined(CONFIG_NONPAE) && !defined(CONFIG_PAE)
#define CONFIG_PAE 1
#endif

#ifdef CONFIG_PAE
#define HYPERVISOR_VIRT_START   0xF5800000UL    /* PAE layout */
#define MACH2PHYS_VIRT_START    0xF5800000UL    /* read-only M2P table */
#define MACH2PHYS_VIRT_END      0xF6800000UL
#define XEN_GUEST_MAGIC         "xen-3.0-x86_32p"
#else
#define HYPERVISOR_VIRT_START   0xFC000000UL    /* non-PAE layout */
#define MACH2PHYS_VIRT_START    0xFC000000UL
#define MACH2PHYS_VIRT_END      0xFC400000UL
#define XEN_GUEST_MAGIC         "xen-3.0-x86_32"
#endif
#define FIRST_RESERVED_GDT_BYTE 0xE000          /* page 14 of the GDT */

/* ---- ELF notes (elfnote.h), name "Xen" ------------------------------ */
#define XEN_ELFNOTE_ENTRY           1
#define XEN_ELFNOTE_HYPERCALL_PAGE  2
#define XEN_ELFNOTE_VIRT_BASE       3
#define XEN_ELFNOTE_PADDR_OFFSET    4
#define XEN_ELFNOTE_XEN_VERSION     5
#define XEN_ELFNOTE_GUEST_OS        6
#define XEN_ELFNOTE_GUEST_VERSION   7
#define XEN_ELFNOTE_LOADER          8
#define XEN_ELFNOTE_PAE_MODE        9
#define XEN_ELFNOTE_FEATURES        10

/* ---- Sub-operations ------------------------------------------------- */
#define CONSOLEIO_write         0
#define CONSOLEIO_read          1

#define XENVER_version          0
#define XENVER_extraversion     1
#define XEN_EXTRAVERSION_LEN    16

#define VMASST_CMD_enable               0
#define VMASST_CMD_disable              1
#define VMASST_TYPE_writable_pagetables 2

#define SCHEDOP_yield           0
#define SCHEDOP_block           1
#define SCHEDOP_shutdown        2

#define SHUTDOWN_poweroff       0
#define SHUTDOWN_reboot         1
#define SHUTDOWN_suspend        2
#define SHUTDOWN_crash          3

#define CALLBACKOP_register     0
#define CALLBACKTYPE_event      0
#define CALLBACKTYPE_failsafe   1
#define CALLBACKF_mask_events   (1U << 0)

#define EVTCHNOP_bind_virq      1
#define EVTCHNOP_send           4

#define VIRQ_TIMER              0

#define MMU_NORMAL_PT_UPDATE    0

#define UVMF_NONE               0
#define UVMF_TLB_FLUSH          1
#define UVMF_INVLPG             2

#define DOMID_SELF              0x7FF0

#define SIF_PRIVILEGED          (1U << 0)
#define SIF_INITDOMAIN          (1U << 1)

/* trap_info.flags: bits 0-1 = DPL for software `int`, bit 2 = mask events. */
#define TI_DPL(dpl)             ((dpl) & 3)
#define TI_MASK_EVENTS          (1U << 2)

/* PAE page-table entry bits. */
#define _PAGE_PRESENT           0x001
#define _PAGE_RW                0x002
#define _PAGE_USER              0x004
#define _PAGE_ACCESSED          0x020
#define _PAGE_DIRTY             0x040
#define PAGE_SHIFT              12
#define PAGE_SIZE               (1UL << PAGE_SHIFT)
#ifdef CONFIG_PAE
#define PTE_MFN_MASK            0x000FFFFFFFFFF000ULL   /* bits 12..51 */
#else
#define PTE_MFN_MASK            0xFFFFF000ULL           /* bits 12..31 */
#endif

/* 2-level event channels: 32 words of 32 bits on i386. */
#define NR_EVTCHN_WORDS         32
#define NR_EVENT_CHANNELS       (NR_EVTCHN_WORDS * 32)  /* 1024 */
#define XEN_LEGACY_MAX_VCPUS    32

/* Xen's error numbers (errno.h) that we name in messages. */
#define XEN_EPERM               1
#define XEN_EFAULT              14
#define XEN_EINVAL              22
#define XEN_ENOSYS              38

#ifndef __ASSEMBLER__

#include <stdint.h>

typedef uint32_t evtchn_port_t;
typedef uint16_t domid_t;
typedef uint32_t xen_pfn_t;

/* ---- start_info (xen.h), 1112 bytes on i386 ------------------------- */
struct start_info {
    char     magic[32];         /* "xen-3.0-x86_32p" */
    uint32_t nr_pages;
    uint32_t shared_info;       /* MACHINE address of shared_info */
    uint32_t flags;             /* SIF_* */
    xen_pfn_t store_mfn;
    uint32_t store_evtchn;
    union {
        struct {
            xen_pfn_t mfn;      /* console ring page */
            uint32_t evtchn;
        } domU;
        struct {
            uint32_t info_off;
            uint32_t info_size;
        } dom0;
    } console;
    uint32_t pt_base;           /* VA of the bootstrap L3 */
    uint32_t nr_pt_frames;
    uint32_t mfn_list;          /* VA of the p2m array (pfn -> mfn) */
    uint32_t mod_start;
    uint32_t mod_len;
    char     cmd_line[1024];
    uint32_t first_p2m_pfn;
    uint32_t nr_p2m_frames;
};
typedef struct start_info start_info_t;

/* ---- shared_info (xen.h, arch-x86/xen*.h), 2344 bytes on i386 ------- */
struct vcpu_time_info {
    uint32_t version;           /* odd while Xen updates the record */
    uint32_t pad0;
    uint64_t tsc_timestamp;     /* TSC at the last update */
    uint64_t system_time;       /* ns since boot at tsc_timestamp */
    uint32_t tsc_to_system_mul; /* 32.32 fixed-point ns per tick */
    int8_t   tsc_shift;
    uint8_t  flags;
    uint8_t  pad1[2];
};

struct arch_vcpu_info {
    uint32_t cr2;               /* faulting address of the last #PF */
    uint32_t pad[5];
};

struct vcpu_info {
    uint8_t  evtchn_upcall_pending;
    uint8_t  evtchn_upcall_mask;
    uint8_t  pad0[2];
    uint32_t evtchn_pending_sel;
    struct arch_vcpu_info arch;
    struct vcpu_time_info time;
};

struct arch_shared_info {
    uint32_t max_pfn;
    uint32_t pfn_to_mfn_frame_list_list;
    uint32_t nmi_reason;
    uint32_t p2m_cr3;
    uint32_t p2m_vaddr;
    uint32_t p2m_generation;
    uint32_t wc_sec_hi;         /* on i386 the high word lives here */
};

struct shared_info {
    struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
    uint32_t evtchn_pending[NR_EVTCHN_WORDS];
    uint32_t evtchn_mask[NR_EVTCHN_WORDS];
    uint32_t wc_version;
    uint32_t wc_sec;
    uint32_t wc_nsec;
    struct arch_shared_info arch;
};

/* ---- Hypercall argument structures ---------------------------------- */
struct trap_info {
    uint8_t  vector;
    uint8_t  flags;             /* TI_DPL() | TI_MASK_EVENTS */
    uint16_t cs;
    uint32_t address;           /* 0 terminates the table */
};

/* callback.h; on x86_32 the address is a {cs, eip} pair. */
struct callback_register {
    uint16_t type;
    uint16_t flags;
    uint32_t cs;
    uint32_t eip;
};

struct sched_shutdown {
    uint32_t reason;
};

struct evtchn_send {
    evtchn_port_t port;
};

struct evtchn_bind_virq {
    uint32_t virq;              /* IN */
    uint32_t vcpu;              /* IN */
    evtchn_port_t port;         /* OUT */
};

struct mmu_update {
    uint64_t ptr;               /* machine address of the PTE | MMU_* */
    uint64_t val;
};

/* ---- PV console ring (io/console.h) --------------------------------- */
typedef uint32_t XENCONS_RING_IDX;

struct xencons_interface {
    char in[1024];
    char out[2048];
    XENCONS_RING_IDX in_cons, in_prod;
    XENCONS_RING_IDX out_cons, out_prod;
    uint8_t connection;
};

/* ---- Layout checks: one wrong offset breaks every guest ------------- */
#define ABI_CHECK(type, member, off) \
    _Static_assert(__builtin_offsetof(type, member) == (off), \
                   #type "." #member " must be at " #off)
#define ABI_SIZE(type, size) \
    _Static_assert(sizeof(type) == (size), "sizeof(" #type ") must be " #size)

ABI_SIZE(struct start_info, 1112);
ABI_CHECK(struct start_info, nr_pages, 32);
ABI_CHECK(struct start_info, shared_info, 36);
ABI_CHECK(struct start_info, flags, 40);
ABI_CHECK(struct start_info, store_mfn, 44);
ABI_CHECK(struct start_info, store_evtchn, 48);
ABI_CHECK(struct start_info, console.domU.mfn, 52);
ABI_CHECK(struct start_info, console.domU.evtchn, 56);
ABI_CHECK(struct start_info, pt_base, 60);
ABI_CHECK(struct start_info, nr_pt_frames, 64);
ABI_CHECK(struct start_info, mfn_list, 68);
ABI_CHECK(struct start_info, mod_start, 72);
ABI_CHECK(struct start_info, mod_len, 76);
ABI_CHECK(struct start_info, cmd_line, 80);
ABI_CHECK(struct start_info, first_p2m_pfn, 1104);
ABI_CHECK(struct start_info, nr_p2m_frames, 1108);

ABI_SIZE(struct vcpu_time_info, 32);
ABI_CHECK(struct vcpu_time_info, version, 0);
ABI_CHECK(struct vcpu_time_info, tsc_timestamp, 8);
ABI_CHECK(struct vcpu_time_info, system_time, 16);
ABI_CHECK(struct vcpu_time_info, tsc_to_system_mul, 24);
ABI_CHECK(struct vcpu_time_info, tsc_shift, 28);
ABI_CHECK(struct vcpu_time_info, flags, 29);

ABI_SIZE(struct arch_vcpu_info, 24);
ABI_SIZE(struct vcpu_info, 64);
ABI_CHECK(struct vcpu_info, evtchn_upcall_pending, 0);
ABI_CHECK(struct vcpu_info, evtchn_upcall_mask, 1);
ABI_CHECK(struct vcpu_info, evtchn_pending_sel, 4);
ABI_CHECK(struct vcpu_info, arch.cr2, 8);
ABI_CHECK(struct vcpu_info, time, 32);

ABI_SIZE(struct arch_shared_info, 28);
ABI_SIZE(struct shared_info, 2344);
ABI_CHECK(struct shared_info, vcpu_info[1], 64);
ABI_CHECK(struct shared_info, evtchn_pending, 2048);
ABI_CHECK(struct shared_info, evtchn_mask, 2176);
ABI_CHECK(struct shared_info, wc_version, 2304);
ABI_CHECK(struct shared_info, wc_sec, 2308);
ABI_CHECK(struct shared_info, wc_nsec, 2312);
ABI_CHECK(struct shared_info, arch.max_pfn, 2316);
ABI_CHECK(struct shared_info, arch.wc_sec_hi, 2340);

ABI_SIZE(struct trap_info, 8);
ABI_CHECK(struct trap_info, vector, 0);
ABI_CHECK(struct trap_info, flags, 1);
ABI_CHECK(struct trap_info, cs, 2);
ABI_CHECK(struct trap_info, address, 4);

ABI_SIZE(struct callback_register, 12);
ABI_CHECK(struct callback_register, type, 0);
ABI_CHECK(struct callback_register, flags, 2);
ABI_CHECK(struct callback_register, cs, 4);
ABI_CHECK(struct callback_register, eip, 8);

ABI_SIZE(struct sched_shutdown, 4);
ABI_SIZE(struct evtchn_send, 4);
ABI_SIZE(struct evtchn_bind_virq, 12);
ABI_CHECK(struct evtchn_bind_virq, vcpu, 4);
ABI_CHECK(struct evtchn_bind_virq, port, 8);

ABI_SIZE(struct mmu_update, 16);
ABI_CHECK(struct mmu_update, val, 8);

ABI_SIZE(struct xencons_interface, 3092);
ABI_CHECK(struct xencons_interface, out, 1024);
ABI_CHECK(struct xencons_interface, in_cons, 3072);
ABI_CHECK(struct xencons_interface, in_prod, 3076);
ABI_CHECK(struct xencons_interface, out_cons, 3080);
ABI_CHECK(struct xencons_interface, out_prod, 3084);
ABI_CHECK(struct xencons_interface, connection, 3088);

#undef ABI_CHECK
#undef ABI_SIZE

#endif /* !__ASSEMBLER__ */
#endif /* XEN_ABI_H */
