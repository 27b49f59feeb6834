/*
 * Fast paths that run in the guest's own address space (linked into the
 * read-only .entry section): the iret hypercall, the #GP of rdmsr and the
 * page faults a guest handles itself -- what Xen does in its entry code.
 * There is no CR3 switch, so no TLB or translation-cache flush, and no
 * Python round trip.
 *
 * entry.S calls in with interrupts off, on this vCPU's entry stack, DS/ES
 * flat ring 0.  Only what the guest's view maps may be touched: the frame
 * and mailbox (the entry-stack page), this vCPU's struct shim_vcpu
 * (read-only, at the entry stack + SHIM_GV_VCPU_OFF), its vcpu_info (the
 * SHIM_VINFO_BASE window) and guest memory below the hole, through
 * gv_load/gv_store, whose faults entry.S turns into an error return.  No
 * call may leave this file except to those two (the Makefile checks).
 *
 * What cannot be finished returns FP_SLOW with the frame untouched, and
 * the shim's C path in its own address space starts over.
 */
#include "shim.h"

#define FP_DONE     0       /* fast exit to the guest                       */
#define FP_SLOW     1       /* frame untouched: take the normal path         */
#define FP_EXIT_C   2       /* frame updated; the C exit delivers an upcall  */

#define EFLAGS_TF   (1u << 8)
#define EFLAGS_IF   (1u << 9)
#define EFLAGS_IOPL (3u << 12)
#define EFLAGS_NT   (1u << 14)
#define EFLAGS_RF   (1u << 16)
#define EFLAGS_VM   (1u << 17)

/* entry.S: a ring-0 access to a guest address; a fault returns "failed". */
uint64_t gv_load(uint32_t va) __attribute__((regparm(1)));     /* fault << 32 | value */
uint32_t gv_store(uint32_t va, uint32_t val) __attribute__((regparm(2)));

_Static_assert(SHIM_ACT_EVENTS == (1 << 10), "entry.S compares resp_action with 1 << 10");

int gv_iret(struct xen_regs *r) __attribute__((regparm(1)));
int gv_upcall(struct xen_regs *r) __attribute__((regparm(1)));
int gv_trap(struct xen_regs *r) __attribute__((regparm(1)));

static inline const struct shim_vcpu *gv_vcpu(struct xen_regs *r)
{
    return (const struct shim_vcpu *)(((uint32_t)r & ~0xfffu) + SHIM_GV_VCPU_OFF);
}

static inline struct shim_mbox *gv_mbox(struct xen_regs *r)
{
    return (struct shim_mbox *)((uint32_t)r & ~0xfffu);
}

/* Guest words: aligned and below the hole, as the slow path's walker. */
static inline int get(const struct shim_vcpu *v, uint32_t va, uint32_t *out)
{
    if ((va & 3) || va >= v->hole_start)
        return -1;
    uint64_t x = gv_load(va);
    if (x >> 32)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

static inline int put(const struct shim_vcpu *v, uint32_t va, uint32_t val)
{
    if ((va & 3) || va >= v->hole_start)
        return -1;
    return gv_store(va, val) ? -1 : 0;
}

static inline void write_cr2(uint32_t val)
{
    __asm__ __volatile__("mov %0, %%cr2" :: "r"(val) : "memory");
}

/* An upcall is due or the vCPU must park: the C exit handles both. */
static inline int exit_kind(const struct shim_vcpu *v, volatile uint8_t *vi)
{
    if (v->park || (v->event_cs && vi[0] && !vi[1]))
        return FP_EXIT_C;
    return FP_DONE;
}

/* entry.c's bounce() (Xen's create_bounce_frame) through the guest's own
 * mappings: every word is written before anything else changes. */
static int bounce(const struct shim_vcpu *v, volatile uint8_t *vi, struct xen_regs *r,
                  uint32_t cs, uint32_t eip, uint32_t flags, uint32_t errcode)
{
    uint32_t esp, ss;
    uint8_t saved_mask = vi[1];

    if (!(cs & ~3u))
        return -1;
    if (r->cs & 2) {                            /* from ring 2/3: kernel stack */
        esp = v->kernel_sp - 8;
        ss = v->kernel_ss;
        if (put(v, esp, r->esp) || put(v, esp + 4, r->ss))
            return -1;
    } else {
        esp = r->esp;
        ss = r->ss;
    }
    esp -= 12;
    if (put(v, esp, r->eip) ||
        put(v, esp + 4, (r->cs & 0xffffu) | ((uint32_t)saved_mask << 16)) ||
        put(v, esp + 8, (r->eflags & ~EFLAGS_IF) | (saved_mask ? 0 : EFLAGS_IF)))
        return -1;
    if (flags & SHIM_TBF_ERRCODE) {
        esp -= 4;
        if (put(v, esp, errcode))
            return -1;
    }
    if (flags & SHIM_TBF_INTERRUPT)
        vi[1] = 1;                              /* evtchn_upcall_mask */
    r->eflags &= ~(EFLAGS_VM | EFLAGS_RF | EFLAGS_NT | EFLAGS_TF);
    r->ss = ss;
    r->esp = esp;
    r->cs = (uint16_t)cs;
    r->saved_upcall_mask = 0;
    r->eip = eip;
    return 0;
}

static int reflect(const struct shim_vcpu *v, volatile uint8_t *vi, struct xen_regs *r,
                   unsigned vector, uint32_t errcode, uint32_t cr2)
{
    const struct shim_trap *t = &v->traps[vector];
    uint32_t flags = SHIM_TBF_ERRCODE | ((t->flags & SHIM_TI_IF) ? SHIM_TBF_INTERRUPT : 0);
    struct xen_regs before = *r;

    if (bounce(v, vi, r, t->cs, t->eip, flags, errcode))
        return -1;
    note_trap(gv_mbox(r), vector, errcode, &before, cr2);
    return 0;
}

/* The iret hypercall (compat_iret), as entry.c's fast_iret. */
__attribute__((regparm(1))) int gv_iret(struct xen_regs *r)
{
    const struct shim_vcpu *v = gv_vcpu(r);
    volatile uint8_t *vi = (volatile uint8_t *)v->gv_vinfo;
    uint32_t esp = r->esp, f[6];

    if (!(v->fast_flags & SHIM_FAST_IRET) || !vi)
        return FP_SLOW;
    for (int i = 0; i < 4; i++)
        if (get(v, esp + 4 * i, &f[i]))
            return FP_SLOW;
    uint32_t cs = f[2] & 0xffffu, eflags = f[3];
    if ((eflags & EFLAGS_VM) || !(cs & 3))
        return FP_SLOW;
    if ((cs & 3) != 1 && (get(v, esp + 16, &f[4]) || get(v, esp + 20, &f[5])))
        return FP_SLOW;
    r->eax = f[0];
    r->eip = f[1];
    r->cs = (uint16_t)cs;
    r->eflags = (eflags & SHIM_EFLAGS_ALL & ~EFLAGS_IOPL) | EFLAGS_IF | 2;
    if ((cs & 3) == 1) {
        r->esp = esp + 16;
    } else {
        r->esp = f[4];
        r->ss = f[5];
    }
    vi[1] = (eflags & EFLAGS_IF) ? 0 : 1;
    gv_mbox(r)->stat_gv_fast++;
    return exit_kind(v, vi);
}

/* A hypercall's answer is "an upcall is due": leave_to_guest's delivery. */
__attribute__((regparm(1))) int gv_upcall(struct xen_regs *r)
{
    const struct shim_vcpu *v = gv_vcpu(r);
    volatile uint8_t *vi = (volatile uint8_t *)v->gv_vinfo;

    if (!vi || v->park)
        return FP_SLOW;
    if (v->event_cs && vi[0] && !vi[1]) {
        if (bounce(v, vi, r, v->event_cs, v->event_eip, SHIM_TBF_INTERRUPT, 0))
            return FP_SLOW;
        gv_mbox(r)->stat_gv_fast++;
    }
    return FP_DONE;
}

/* #GP(0) from rdmsr in the guest kernel (entry.c's fast_rdmsr). */
static int gv_gp(const struct shim_vcpu *v, volatile uint8_t *vi, struct xen_regs *r)
{
    uint32_t w0, w1;

    if (!(v->fast_flags & SHIM_FAST_RDMSR) || r->error_code ||
        r->cs != SHIM_FLAT_RING1_CS || (r->eflags & EFLAGS_TF))
        return FP_SLOW;
    if (get(v, r->eip & ~3u, &w0) || get(v, (r->eip & ~3u) + 4, &w1))
        return FP_SLOW;
    uint64_t bytes = ((uint64_t)w1 << 32 | w0) >> (8 * (r->eip & 3));
    if ((bytes & 0xffffu) != 0x320f)            /* 0f 32: rdmsr, no prefix */
        return FP_SLOW;
    for (uint32_t i = 0; i < v->nr_fast_msrs && i < SHIM_MAX_FAST_MSRS; i++) {
        if (v->fast_msrs[i].idx == r->ecx) {
            if (v->fast_msrs[i].python)         /* readable, value of the moment */
                return FP_SLOW;
            r->eax = v->fast_msrs[i].lo;
            r->edx = v->fast_msrs[i].hi;
            r->eip += 2;
            r->eflags &= ~EFLAGS_RF;
            gv_mbox(r)->stat_gv_fast++;
            return exit_kind(v, vi);
        }
    }
    if (reflect(v, vi, r, 13, 0, 0))
        return FP_SLOW;
    gv_mbox(r)->stat_gv_fast++;
    return exit_kind(v, vi);
}

/* A page fault the guest handles: below the hole (the LDT window is
 * Python's), and not a kernel write to a present page while writable
 * page tables are on (Python emulates those). */
static int gv_pf(const struct shim_vcpu *v, volatile uint8_t *vi, struct xen_regs *r)
{
    uint32_t cr2, err = r->error_code;

    __asm__ __volatile__("mov %%cr2, %0" : "=r"(cr2));
    if (!(v->fast_flags & SHIM_FAST_PF) || cr2 >= v->hole_start)
        return FP_SLOW;
    if ((v->fast_flags & SHIM_FAST_PTWR) && (r->cs & 3) == 1 && !(err & 0x18) &&
        (err & 3) == 3)
        return FP_SLOW;
    if (reflect(v, vi, r, 14, err, cr2)) {
        write_cr2(cr2);                         /* our own fault changed it */
        return FP_SLOW;
    }
    *(volatile uint32_t *)(vi + SHIM_VI_CR2) = cr2;
    gv_mbox(r)->stat_gv_fast++;
    return exit_kind(v, vi);
}

__attribute__((regparm(1))) int gv_trap(struct xen_regs *r)
{
    const struct shim_vcpu *v = gv_vcpu(r);
    volatile uint8_t *vi = (volatile uint8_t *)v->gv_vinfo;

    if (!vi)
        return FP_SLOW;
    if (r->entry_vector == 13)
        return gv_gp(v, vi, r);
    if (r->entry_vector == 14)
        return gv_pf(v, vi, r);
    return FP_SLOW;
}
