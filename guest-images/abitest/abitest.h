/*
 * abitest: an XTF-style test guest for the 32-bit PV ABI.  Each check
 * prints "check <name>: ok" or "check <name>: FAIL <why>"; the guest ends
 * with "Test result: SUCCESS|FAILURE" and powers off.
 *
 * Built twice from the same sources: build/abitest.elf (PAE,
 * "xen-3.0-x86_32p") and build/abitest-nopae.elf (-DCONFIG_NONPAE,
 * 2-level paging, "xen-3.0-x86_32").
 */
#ifndef ABITEST_H
#define ABITEST_H

#include "xenguest.h"
#include "hypercall-ext.h"

/* ---- reporting (main.c) --------------------------------------------- */
void check(const char *name, bool ok, const char *fmt, ...) __printf(3, 4);
/* Append to the reason of the next failing check (for multi-part checks). */
void why(const char *fmt, ...) __printf(1, 2);
bool why_empty(void);
void check_why(const char *name);       /* ok iff why() was never called */
extern unsigned int checks_failed, checks_run;

/* ---- catching exceptions (trap.S) ----------------------------------- */
struct catch_record {
    uint32_t vector;
    uint32_t frame_addr;    /* where Xen's frame starts (its ESP) */
    uint32_t cr2;           /* vcpu_info.arch.cr2 at entry */
    uint32_t mask;          /* vcpu_info.evtchn_upcall_mask at entry */
    uint32_t frame[12];     /* [errcode] EIP CS EFLAGS [ESP SS] ... */
};
extern struct catch_record catch_rec;
extern volatile uint32_t fault_ip;      /* the expected faulting EIP */

/*
 * Run fn(arg) with every exception vector (0-19, and the software vectors
 * 0x40-0x43) caught: returns -1 if nothing was raised, else the vector,
 * with the frame in catch_rec.  Nothing may print while armed.
 */
long catch_call(void (*fn)(void *), void *arg);

/* Decoded frame of the last catch: */
bool vector_has_errcode(unsigned int vector);
struct frame {
    bool has_ec;
    uint32_t ec, eip, cs, eflags, esp, ss;
};
struct frame caught_frame(bool has_ec);

/* Install abitest's trap stubs (they pass to the library when not armed). */
void abitest_traps_init(void);

/* Ring 3 (trap.S): run fn(arg) in ring 3 and return its result via int $0x20. */
unsigned long exec_user(unsigned long (*fn)(unsigned long), unsigned long arg);
extern uint32_t user_ret_frame[5];      /* EIP CS EFLAGS ESP SS of int $0x20 */
extern uint32_t user_ret_frame_addr;
extern char user_text_start[], user_text_end[], user_stack[], user_stack_top[];
extern char kstack[], kstack_top[];

/* User-mode snippets (trap.S, .text.user) and the labels of their insns. */
unsigned long u_read_cs(unsigned long);
unsigned long u_get_esp(unsigned long);
unsigned long u_cli(unsigned long);
unsigned long u_hypercall(unsigned long);
unsigned long u_int40(unsigned long);
unsigned long u_int41(unsigned long);
unsigned long u_int3(unsigned long);
unsigned long u_read(unsigned long addr);
unsigned long u_inb80(unsigned long);
unsigned long u_mov_dr7(unsigned long);
extern char u_cli_insn[], u_hypercall_insn[], u_int40_insn[], u_int41_end[],
    u_int3_end[], u_read_insn[], u_inb80_insn[], u_mov_dr7_insn[];

/* The failsafe callback (trap.S). */
void abt_failsafe(void);
extern volatile uint32_t failsafe_count, failsafe_mask;
extern uint32_t failsafe_frame[9];

/* The test event callback (trap.S -> evt.c). */
void abt_evt_entry(void);

/* iret hypercall with a frame we build (trap.S): returns EAX as popped. */
uint32_t iret_to_self(uint32_t eax, uint32_t eflags);

/* ---- memory helpers (main.c) ---------------------------------------- */
void *alloc_page(void);                 /* zeroed, mapped RW, 1:1 */
pte_t *l1e_ptr(unsigned long va);       /* the boot L1 entry of va */
uint64_t l1e_maddr(unsigned long va);
pte_t mk_pte(unsigned long mfn, unsigned int flags);
long set_pte(unsigned long va, pte_t pte);
long make_ro(void *va);
long make_rw(void *va);
long mmuext(unsigned int cmd, unsigned long arg1, unsigned long arg2);
long mmu_upd(uint64_t ptr, uint64_t val);
static inline unsigned long vmfn(const void *va) { return virt_to_mfn(va); }
static inline uint64_t vmaddr(const void *va)
{
    return ((uint64_t)virt_to_mfn(va) << PAGE_SHIFT) | ((unsigned long)va & 0xfff);
}
/* A machine frame the guest does not own (the first M2P frame, else 0). */
unsigned long foreign_mfn(void);
extern domid_t my_domid;

/* Mask every event channel / restore and resync the masks (evt.c). */
void mask_all_ports(uint32_t saved[NR_EVTCHN_WORDS]);
void restore_ports(const uint32_t saved[NR_EVTCHN_WORDS]);

/* ---- the test groups ------------------------------------------------ */
void test_mmu(void);
void test_memop(void);
void test_cpu(void);
void test_events(void);
void test_user(void);

/* Guest-side selectors of abitest's own GDT (cpu.c). */
#define GDT_SEL_DATA1   ((1 << 3) | 1)  /* flat data, DPL 1 */
#define GDT_SEL_NP      ((2 << 3) | 1)  /* flat data, not present */
#define GDT_SEL_SPARE   ((3 << 3) | 1)
extern void *test_gdt;                  /* the GDT page, or NULL */

#define EFLAGS_IF       0x200
#define EFLAGS_TF       0x100
#define EFLAGS_AC       0x40000

#endif /* ABITEST_H */
