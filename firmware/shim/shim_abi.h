/*
 * The shim <-> Python ABI.  The shim is mechanism, Python is policy: Python
 * builds every page table and fills these structures in the shared guest RAM;
 * the shim applies what it finds here and posts requests back.
 *
 * Python declares the same layouts in qemu_xenpv/shim.py; tests/unit/
 * test_shim_abi.py checks both against the DWARF of build/shim.elf.
 */
#ifndef SHIM_ABI_H
#define SHIM_ABI_H

#define SHIM_ABI_VERSION        1
#define SHIM_BOOT_MAGIC         0x4d494853u     /* "SHIM" */
#define SHIM_MAX_VCPUS          32
#define SHIM_MAX_CPUID          48              /* CPUID leaves the shim reports */

/* ---- linear layout of the shim's part of the hypervisor hole ------------
 * Everything below SHIM_PUB_END is mapped in every guest address space
 * (read-only except the entry stacks); the shim's private code and data are
 * identity-mapped only in the shim's own address space.                    */
#define SHIM_PUB_BASE           0xFF000000u     /* .entry text, then .pub data */
#define SHIM_ESTACK_BASE        0xFF040000u     /* vCPU n: one page at +n*8K   */
#define SHIM_ESTACK_STRIDE      0x2000u
#define SHIM_GV_VCPU_OFF        0x1000u         /* + estack: struct shim_vcpu, RO */
#define SHIM_VINFO_BASE         0xFF080000u     /* vCPU n: its vcpu_info page at +n*4K */
#define SHIM_DOORBELL_VA        0xFF0F0000u     /* ivshmem BAR0 (doorbell)     */
#define SHIM_GDT_BASE           0xFF100000u     /* vCPU n: 16 pages at +n*64K  */
#define SHIM_GDT_STRIDE         0x10000u
#define SHIM_LDT_BASE           0xFF300000u     /* vCPU n: 16 pages at +n*64K  */
#define SHIM_LDT_STRIDE         0x10000u
#define SHIM_PUB_END            0xFF500000u

/* Xen's reserved GDT page (FIRST_RESERVED_GDT_PAGE 14) and its entries.   */
#define SHIM_GDT_RESERVED_PAGE  14
#define SHIM_GDT_FIRST_RESERVED 7168            /* entry index               */
#define SHIM_HYP_CS             0xe008          /* ring 0 flat code          */
#define SHIM_HYP_DS             0xe010          /* ring 0 flat data          */
#define SHIM_TSS_SEL            0xe040          /* entry 7168+8              */
#define SHIM_LDT_SEL            0xe048          /* entry 7168+9              */
#define SHIM_GDT_LIMIT          (15 * 4096 - 1)

/* The entry stack page: the mailbox (struct shim_mbox) at the bottom, the
 * CPU frame at the top; the four data segment selectors are stored above
 * it so the whole frame has Xen's cpu_user_regs (x86_32) layout.  This
 * page is guest-writable: while the vCPU is inside the shim the guest
 * cannot run, and everything read from it is checked before use.         */
#define SHIM_ESTACK_MBOX_OFF    0
#define SHIM_ESTACK_FRAME_OFF   (4096 - 68)     /* struct xen_regs           */

/* Interrupt vectors the shim owns (all gates are DPL 0 except 3, 4: DPL 3
 * and 0x82: DPL 1, as 32-bit Xen set them).                                */
#define SHIM_VEC_HYPERCALL      0x82
#define SHIM_VEC_TIMER          0xf0
#define SHIM_VEC_KICK           0xf1
#define SHIM_VEC_SPURIOUS       0xff

/* offset of shim_boot.status, for head.S (checked in main.c) */
#define SHIM_BOOT_STATUS_OFF    308
#define SHIM_BOOT_PSTACK_OFF    180
#define SHIM_AP_TRAMPOLINE      0x8000          /* SIPI vector 0x08           */

/* boot flags */
#define SHIM_BOOT_PAE           (1u << 0)
#define SHIM_BOOT_HALT          (1u << 1)       /* init, report, then halt    */

/* doorbells: how the shim tells Python a request is posted                */
#define SHIM_DOORBELL_IVSHMEM   0               /* BAR0+12 write             */
#define SHIM_DOORBELL_PORT      1               /* outb to an I/O port        */
#define SHIM_DOORBELL_NONE      2               /* Python polls               */

/* boot status (written by the shim) */
#define SHIM_STATUS_NONE        0
#define SHIM_STATUS_STARTED     1
#define SHIM_STATUS_READY       2
#define SHIM_STATUS_HALTED      3
#define SHIM_STATUS_PANIC       0xdead

/* request kinds (shim -> Python) */
#define SHIM_REQ_BOOT           1   /* vCPU initialised: calibration in boot  */
#define SHIM_REQ_HYPERCALL      2   /* regs.eax = number, args in regs       */
#define SHIM_REQ_TRAP           3   /* exception from the guest              */
#define SHIM_REQ_PANIC          4   /* shim-internal failure, text in boot   */
#define SHIM_REQ_BOUNCE_FAULT   5   /* could not write a bounce frame        */
#define SHIM_REQ_EXIT_FAULT     6   /* iret/segment reload to guest faulted  */
#define SHIM_REQ_BAD_FRAME      7   /* Python left an invalid guest frame    */
#define SHIM_REQ_PARKED         8   /* Python asked this vCPU to stop (down) */

/* response actions (Python -> shim), applied in this order on the way out */
#define SHIM_ACT_CR3            (1u << 0)   /* load guest_cr3                */
#define SHIM_ACT_GDT            (1u << 1)   /* lgdt with gdt_limit           */
#define SHIM_ACT_LDT            (1u << 2)   /* lldt ldt_sel                  */
#define SHIM_ACT_TIMER          (1u << 3)   /* re-arm from timer_deadline    */
#define SHIM_ACT_BOUNCE         (1u << 4)   /* bounce_* to the guest's trap  */
#define SHIM_ACT_BLOCK          (1u << 5)   /* sleep until an event or wake  */
#define SHIM_ACT_RETRY          (1u << 6)   /* sleep until any wake, re-post */
#define SHIM_ACT_HALT           (1u << 7)   /* stop this vCPU for good       */
#define SHIM_ACT_FPU            (1u << 8)   /* CR0.TS := fpu_ts              */
#define SHIM_ACT_FAILSAFE       (1u << 9)   /* bounce to the failsafe cb     */
#define SHIM_ACT_EVENTS         (1u << 10)  /* an upcall is due: take the slow exit */
#define SHIM_ACT_DR             (1u << 11)  /* load debug registers from dr[]  */
#define SHIM_ACT_START_AP       (1u << 12)  /* INIT-SIPI-SIPI vCPU start_ap    */

/* bounce flags (as Xen's TBF_*) */
#define SHIM_TBF_ERRCODE        1u
#define SHIM_TBF_INTERRUPT      8u
#define SHIM_TBF_FAILSAFE       16u

/* trap table entry flags: bits 0-1 DPL, bit 2 "interrupt gate"            */
#define SHIM_TI_DPL_MASK        3u
#define SHIM_TI_IF              4u

/* Fast paths the shim takes without asking Python (shim_vcpu.fast_flags);
 * Python turns them off where its own handling must see every event
 * (--trace-hypercalls, VMASST_TYPE_architectural_iopl).                   */
#define SHIM_FAST_IRET          (1u << 0)   /* the iret hypercall            */
#define SHIM_FAST_RDMSR         (1u << 1)   /* rdmsr #GP from FLAT_RING1_CS  */
#define SHIM_FAST_PF            (1u << 2)   /* reflect #PF below the hole    */
#define SHIM_FAST_PTWR          (1u << 3)   /* ...except kernel writes to present
                                               pages (writable page tables)  */
#define SHIM_MAX_FAST_MSRS      12          /* readable MSRs the shim knows:
                                               answered, or left to Python */
#define SHIM_HYPERCALL_IRET     23          /* __HYPERVISOR_iret             */
#define SHIM_FLAT_RING1_CS      0xe019      /* FLAT_RING1_CS (x86_32)        */
#define SHIM_EFLAGS_ALL         0x3f7fd5u   /* what an iret may set, as Xen  */
#define SHIM_VI_CR2             8           /* vcpu_info.arch.cr2            */

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Xen's struct cpu_user_regs for x86_32 (68 bytes). */
struct xen_regs {
    uint32_t ebx, ecx, edx, esi, edi, ebp, eax;
    uint16_t error_code, entry_vector;
    uint32_t eip;
    uint16_t cs;
    uint8_t  saved_upcall_mask, _pad0;
    uint32_t eflags, esp, ss, es, ds, fs, gs;
};

struct shim_trap {
    uint16_t cs;
    uint8_t  flags;                 /* SHIM_TI_*                     */
    uint8_t  vector;
    uint32_t eip;
};

/* The mailbox, at the bottom of the vCPU's entry-stack page. */
struct shim_mbox {
    volatile uint32_t req_seq;      /* shim: bump after filling the request  */
    volatile uint32_t req_kind;     /* SHIM_REQ_*                            */
    volatile uint32_t resp_seq;     /* Python: = req_seq when answered       */
    volatile uint32_t resp_action;  /* SHIM_ACT_*                            */
    volatile uint32_t host_polling; /* Python spins: the doorbell may be skipped */
    volatile uint32_t guest_waiting;/* shim sleeps on the answer: kick it    */
    uint32_t trap_vector;           /* SHIM_REQ_TRAP: vector                 */
    uint32_t trap_errcode;          /*                error code             */
    uint32_t trap_cr2;              /*                CR2 for #PF            */
    uint32_t fault_eip;             /* EXIT_FAULT: where, which vector       */
    uint32_t fault_vector;
    uint32_t req_tsc_lo, req_tsc_hi;/* TSC when the request was posted       */
    uint32_t stat_gv_fast;          /* traps and irets done in the guest's view */
    /* the last exception bounced to the guest (for crash reports only) */
    uint32_t last_trap_vector;      /* vector + 1, 0 = none yet              */
    uint32_t last_trap_errcode, last_trap_eip, last_trap_cs, last_trap_cr2;
};

/* One page per vCPU, private to the shim (identity mapped); also mapped
 * read-only at its entry stack + SHIM_GV_VCPU_OFF in that vCPU's own view
 * of the hole, where the guest-view fast paths (fastpath.c) read it. */
struct shim_vcpu {
    uint32_t vcpu_id;
    uint32_t mbox;                  /* address of this vCPU's struct shim_mbox */
    /* ---- state Python decides, the shim applies ---- */
    uint32_t guest_cr3;             /* real CR3 for the guest (PAE: shadow L3) */
    uint32_t gdt_limit;
    uint32_t ldt_sel;
    uint32_t kernel_ss, kernel_sp;  /* stack_switch                          */
    uint32_t event_cs, event_eip;   /* event upcall                          */
    uint32_t failsafe_cs, failsafe_eip;
    uint32_t vcpu_info_pa;          /* machine address of vcpu_info, 0 = none */
    uint32_t evtchn_pending_pa;     /* machine address of shared_info        */
    uint32_t virq_timer_port;       /* port + 1, 0 = VIRQ_TIMER not bound    */
    uint32_t bounce_vector, bounce_errcode, bounce_flags;
    uint32_t fpu_ts;                /* guest's virtual CR0.TS                */
    uint32_t dr[8];                 /* hardware DR0-3 and DR7 for the guest  */
    uint32_t start_ap;              /* SHIM_ACT_START_AP: which vCPU         */
    volatile uint32_t park;         /* Python: stop at the next exit (VCPUOP_down) */
    uint32_t hole_start;            /* HYPERVISOR_VIRT_START of this guest   */
    uint64_t timer_deadline;        /* set_timer_op, system ns, 0 = none     */
    uint64_t wake_deadline;         /* RETRY/BLOCK wake-up, 0 = none         */
    uint64_t periodic_ns;           /* periodic VIRQ_TIMER, 0 = off          */
    uint64_t periodic_next;
    /* ---- written by the shim ---- */
    uint32_t stat_entries, stat_doorbells, stat_upcalls, stat_timer_irqs;
    uint32_t stat_kicks, stat_blocks;
    volatile uint32_t in_request;   /* a timer IRQ now is deferred            */
    volatile uint32_t deferred_timer;
    uint32_t kicks_at_post;         /* stat_kicks when the request was posted */
    uint32_t stat_fast;             /* irets and rdmsrs done without Python   */
    /* ---- fast paths (Python writes; the shim only reads) ---- */
    uint32_t fast_flags;            /* SHIM_FAST_*                            */
    uint32_t gv_vinfo;              /* vcpu_info in this vCPU's own view, 0 = none */
    uint32_t nr_fast_msrs;
    struct { uint32_t idx, lo, hi, python; } fast_msrs[SHIM_MAX_FAST_MSRS];
    /* ---- the guest's virtual IDT ---- */
    struct shim_trap traps[256];
};

/* Written by Python before the first instruction runs. */
struct shim_boot {
    uint32_t magic;                 /* SHIM_BOOT_MAGIC                       */
    uint32_t abi_version;
    uint32_t flags;                 /* SHIM_BOOT_*                           */
    uint32_t cr3;                   /* the shim's own address space          */
    uint32_t nr_vcpus;
    uint32_t doorbell;              /* SHIM_DOORBELL_*                       */
    uint32_t doorbell_port;         /* SHIM_DOORBELL_PORT: I/O port          */
    uint32_t ivshmem_bar0;          /* addresses Python chose for ivshmem    */
    uint32_t ivshmem_bar1;
    uint32_t ivshmem_bar2;
    uint32_t ivshmem_peer;          /* Python's ivshmem peer id              */
    uint32_t spin_loops;            /* answer spin before sleeping           */
    uint32_t mem_top;               /* end of RAM the shim may touch         */
    uint32_t vcpu[SHIM_MAX_VCPUS];  /* address of struct shim_vcpu           */
    uint32_t pstack[SHIM_MAX_VCPUS];/* top of each vCPU's private stack      */
    /* ---- written by the shim ---- */
    volatile uint32_t status;       /* SHIM_STATUS_*                         */
    uint32_t tsc_khz;
    uint32_t lapic_khz;
    uint32_t tsc_mul;               /* ns = ((tsc << shift) * mul) >> 32     */
    int32_t  tsc_shift;
    uint32_t ivshmem_bdf;           /* 0xffffffff = none found               */
    uint64_t boot_tsc;
    uint64_t boot_ns;
    uint32_t nr_cpuid;              /* entries filled in cpuid[]             */
    struct { uint32_t leaf, subleaf, a, b, c, d; } cpuid[SHIM_MAX_CPUID];
    volatile uint32_t time_version; /* odd while the anchor below changes    */
    uint32_t _pad;
    uint64_t anchor_tsc;            /* system time = anchor_ns +             */
    uint64_t anchor_ns;             /*   scale(tsc - anchor_tsc)             */
    char     panic[160];
};

/* Read-only data every guest can see (mapped in the hole). */
struct shim_pcpu {
    uint32_t pstack_top;            /* private stack of this vCPU            */
    uint32_t vcpu;                  /* struct shim_vcpu                      */
    uint32_t shim_cr3;
    uint32_t _pad;
};

/* Read-only configuration of the hypercall fast path. */
struct shim_fast {
    uint32_t doorbell;              /* SHIM_DOORBELL_*                       */
    uint32_t doorbell_value;        /* ivshmem: (peer << 16) | vector        */
    uint32_t doorbell_port;
    uint32_t spin_loops;
};

#endif /* __ASSEMBLER__ */
#endif /* SHIM_ABI_H */
