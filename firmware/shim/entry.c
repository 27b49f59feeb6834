/*
 * What happens between a guest's entry and its return: post the request,
 * wait for Python's answer, apply it, deliver events, build bounce frames
 * exactly as Xen's create_bounce_frame does, validate the frame and go back.
 */
#include "shim.h"

#define EFLAGS_TF   (1u << 8)
#define EFLAGS_IF   (1u << 9)
#define EFLAGS_IOPL (3u << 12)
#define EFLAGS_NT   (1u << 14)
#define EFLAGS_RF   (1u << 16)
#define EFLAGS_VM   (1u << 17)

#define PTE_P       1u
#define PTE_RW      2u
#define PTE_A       0x20u
#define PTE_D       0x40u
#define PTE_PS      0x80u

struct ring0_frame {
    uint32_t ebx, ecx, edx, esi, edi, ebp, eax;
    uint16_t error_code, vector;
    uint32_t eip, cs, eflags;
};

/* Each private stack is 8 KiB aligned with its vCPU pointer at the bottom. */
struct shim_vcpu *this_vcpu(void)
{
    uint32_t sp;
    __asm__("movl %%esp, %0" : "=r"(sp));
    return *(struct shim_vcpu **)(sp & ~0x1fffu);
}

static struct xen_regs *estack_frame(struct shim_vcpu *v)
{
    return (struct xen_regs *)(SHIM_ESTACK_BASE + v->vcpu_id * SHIM_ESTACK_STRIDE +
                               SHIM_ESTACK_FRAME_OFF);
}

static struct shim_mbox *mbox(struct shim_vcpu *v)
{
    return (struct shim_mbox *)v->mbox;
}

static volatile uint8_t *vcpu_info(struct shim_vcpu *v)
{
    return (volatile uint8_t *)v->vcpu_info_pa;
}

/* ---- 2-level event channels: set a port pending, Xen's exact edge rules */
void evtchn_set_pending(struct shim_vcpu *v, unsigned port)
{
    volatile uint8_t *vi = vcpu_info(v);
    uint32_t si = v->evtchn_pending_pa;
    if (!vi || !si || port >= 1024)
        return;
    if (test_and_set_bit(port, (void *)(si + 2048)))
        return;
    if (test_bit(port, (void *)(si + 2176)))
        return;
    if (test_and_set_bit(port / 32, (void *)(vi + 4)))
        return;
    vi[0] = 1;                                  /* evtchn_upcall_pending */
}

/* ---- the mailbox ------------------------------------------------------- */
static uint32_t post(struct shim_vcpu *v, uint32_t kind, int *rang)
{
    struct shim_mbox *m = mbox(v);
    uint32_t seq = m->req_seq + 1;
    uint64_t tsc = rdtsc();

    v->kicks_at_post = v->stat_kicks;
    m->req_tsc_lo = (uint32_t)tsc;
    m->req_tsc_hi = (uint32_t)(tsc >> 32);
    m->req_kind = kind;
    barrier();
    m->req_seq = seq;
    mb();
    *rang = 0;
    if (!m->host_polling) {
        doorbell_ring(v);
        *rang = 1;
    }
    return seq;
}

/* Wait for Python's answer to request `seq`: spin, then sleep until kicked. */
static uint32_t wait_answer(struct shim_vcpu *v, uint32_t seq, int rang)
{
    struct shim_mbox *m = mbox(v);

    v->in_request = 1;
    for (uint32_t i = 0; i < shim_boot.spin_loops; i++) {
        if (m->resp_seq == seq)
            goto done;
        cpu_relax();
    }
    if (!rang)
        doorbell_ring(v);       /* Python may have stopped polling meanwhile */
    for (;;) {
        m->guest_waiting = 1;
        mb();
        if (m->resp_seq == seq)
            break;
        sti_hlt_cli();          /* Python kicks us when it answers */
    }
    m->guest_waiting = 0;
done:
    barrier();
    v->in_request = 0;
    if (v->deferred_timer) {
        v->deferred_timer = 0;
        timer_irq(v);
    }
    return m->resp_action;
}

static uint32_t post_and_wait(struct shim_vcpu *v, uint32_t kind)
{
    int rang;
    uint32_t seq = post(v, kind, &rang);
    return wait_answer(v, seq, rang);
}

static __attribute__((noreturn)) void halt_forever(void)
{
    for (;;)
        __asm__ __volatile__("cli; hlt");
}

/* ---- guest memory through the guest's own page tables ------------------
 * A supervisor access as the CPU would make it (writes with CR0.WP set):
 * every level present (and writable for a write), accessed and, for a
 * write, dirty bits set.  Aligned words below the hole only; 0 on a fault. */
static volatile uint32_t *guest_ptr(struct shim_vcpu *v, uint32_t va, int write)
{
    uint32_t need = write ? (PTE_P | PTE_RW) : PTE_P;
    uint32_t ad = write ? (PTE_A | PTE_D) : PTE_A;
    uint32_t l1pa;

    if (va >= v->hole_start || (va & 3))
        return 0;
    if (shim_boot.flags & SHIM_BOOT_PAE) {
        volatile uint64_t *l3 = (volatile uint64_t *)(v->guest_cr3 & ~31u);
        uint64_t e3 = l3[va >> 30];
        if (!(e3 & PTE_P) || (e3 >> 32))
            return 0;
        volatile uint64_t *l2 = (volatile uint64_t *)((uint32_t)e3 & ~0xfffu);
        volatile uint64_t *p2 = &l2[(va >> 21) & 511];
        uint64_t e2 = *p2;
        if ((e2 & (need | PTE_PS)) != need || (e2 >> 32) ||
            ((uint32_t)e2 & ~0xfffu) >= shim_boot.mem_top)
            return 0;
        volatile uint64_t *l1 = (volatile uint64_t *)((uint32_t)e2 & ~0xfffu);
        volatile uint64_t *p1 = &l1[(va >> 12) & 511];
        uint64_t e1 = *p1;
        if ((e1 & need) != need || (e1 >> 32))
            return 0;
        if (!(e2 & PTE_A))
            test_and_set_bit(5, (volatile void *)p2);
        if ((e1 & ad) != ad) {
            test_and_set_bit(5, (volatile void *)p1);
            if (write)
                test_and_set_bit(6, (volatile void *)p1);
        }
        l1pa = (uint32_t)e1 & ~0xfffu;
    } else {
        volatile uint32_t *l2 = (volatile uint32_t *)(v->guest_cr3 & ~0xfffu);
        volatile uint32_t *p2 = &l2[va >> 22];
        uint32_t e2 = *p2;
        if ((e2 & (need | PTE_PS)) != need || (e2 & ~0xfffu) >= shim_boot.mem_top)
            return 0;
        volatile uint32_t *l1 = (volatile uint32_t *)(e2 & ~0xfffu);
        volatile uint32_t *p1 = &l1[(va >> 12) & 1023];
        uint32_t e1 = *p1;
        if ((e1 & need) != need)
            return 0;
        if (!(e2 & PTE_A))
            test_and_set_bit(5, p2);
        if ((e1 & ad) != ad) {
            test_and_set_bit(5, p1);
            if (write)
                test_and_set_bit(6, p1);
        }
        l1pa = e1 & ~0xfffu;
    }
    if (l1pa >= shim_boot.mem_top)
        return 0;
    return (volatile uint32_t *)(l1pa + (va & 0xfffu));
}

static int guest_put(struct shim_vcpu *v, uint32_t va, uint32_t val)
{
    volatile uint32_t *p = guest_ptr(v, va, 1);
    if (!p)
        return -1;
    *p = val;
    return 0;
}

static int guest_get(struct shim_vcpu *v, uint32_t va, uint32_t *val)
{
    volatile uint32_t *p = guest_ptr(v, va, 0);
    if (!p)
        return -1;
    *val = *p;
    return 0;
}

/* Xen's create_bounce_frame (x86_32): {[ESP, SS,] EFLAGS, CS|mask<<16, EIP}
 * [error code] [DS ES FS GS for failsafe] on the ring-1 stack. */
static int bounce(struct shim_vcpu *v, uint32_t cs, uint32_t eip, uint32_t flags,
                  uint32_t errcode)
{
    struct xen_regs *r = estack_frame(v);
    volatile uint8_t *vi = vcpu_info(v);
    uint32_t esp, ss;

    if (!(cs & ~3u))
        return -1;                              /* null selector: crash */
    if (r->cs & 2) {                            /* from ring 2/3: kernel stack */
        esp = v->kernel_sp - 8;
        ss = v->kernel_ss;
        if (guest_put(v, esp, r->esp) || guest_put(v, esp + 4, r->ss))
            return -1;
    } else {
        esp = r->esp;
        ss = r->ss;
    }
    uint8_t saved_mask = vi ? vi[1] : 0;
    esp -= 12;
    if (guest_put(v, esp, r->eip))
        return -1;
    if ((flags & SHIM_TBF_INTERRUPT) && vi)
        vi[1] = 1;                              /* evtchn_upcall_mask */
    if (guest_put(v, esp + 4, (r->cs & 0xffffu) | ((uint32_t)saved_mask << 16)) ||
        guest_put(v, esp + 8, (r->eflags & ~EFLAGS_IF) | (saved_mask ? 0 : EFLAGS_IF)))
        return -1;
    if (flags & SHIM_TBF_ERRCODE) {
        esp -= 4;
        if (guest_put(v, esp, errcode))
            return -1;
    }
    if (flags & SHIM_TBF_FAILSAFE) {
        esp -= 16;
        if (guest_put(v, esp, r->ds) || guest_put(v, esp + 4, r->es) ||
            guest_put(v, esp + 8, r->fs) || guest_put(v, esp + 12, r->gs))
            return -1;
        r->ds = r->es = r->fs = r->gs = 0;
    }
    r->eflags &= ~(EFLAGS_VM | EFLAGS_RF | EFLAGS_NT | EFLAGS_TF);
    r->ss = ss;
    r->esp = esp;
    r->cs = (uint16_t)cs;
    r->saved_upcall_mask = 0;
    r->eip = eip;
    return 0;
}

static void handle_request(struct shim_vcpu *v, uint32_t kind);

static void bounce_or_crash(struct shim_vcpu *v, uint32_t cs, uint32_t eip,
                            uint32_t flags, uint32_t errcode)
{
    if (bounce(v, cs, eip, flags, errcode)) {
        handle_request(v, SHIM_REQ_BOUNCE_FAULT);   /* Python crashes the domain */
        halt_forever();
    }
}

/* ---- fast paths: what Xen does for these without Python's policy ------
 * Each returns 0 when done and -1 to leave the case to Python, which then
 * gives the full answer (including crashing the domain). */

/* The iret hypercall (compat_iret): pop {eax, eip, cs, eflags[, esp, ss]}
 * from the guest stack; the upcall mask follows the popped EFLAGS.IF. */
static int fast_iret(struct shim_vcpu *v)
{
    struct xen_regs *r = estack_frame(v);
    volatile uint8_t *vi = vcpu_info(v);
    uint32_t esp = r->esp, f[6];

    if (!(v->fast_flags & SHIM_FAST_IRET) || !vi)
        return -1;
    for (int i = 0; i < 4; i++)
        if (guest_get(v, esp + 4 * i, &f[i]))
            return -1;
    uint32_t cs = f[2] & 0xffffu, eflags = f[3];
    if ((eflags & EFLAGS_VM) || !(cs & 3))
        return -1;
    if ((cs & 3) != 1 && (guest_get(v, esp + 16, &f[4]) || guest_get(v, esp + 20, &f[5])))
        return -1;
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
    vi[1] = (eflags & EFLAGS_IF) ? 0 : 1;       /* evtchn_upcall_mask */
    v->stat_fast++;
    return 0;
}

/* #GP(0) from `rdmsr` in the guest kernel: answer the MSRs Python listed,
 * reflect #GP for every other one (Xen's guest_rdmsr for a PV domU). */
static int fast_rdmsr(struct shim_vcpu *v, struct xen_regs *r)
{
    uint32_t w0, w1;

    if (!(v->fast_flags & SHIM_FAST_RDMSR) || r->error_code ||
        r->cs != SHIM_FLAT_RING1_CS || (r->eflags & EFLAGS_TF))
        return -1;
    if (guest_get(v, r->eip & ~3u, &w0) || guest_get(v, (r->eip & ~3u) + 4, &w1))
        return -1;
    uint64_t bytes = ((uint64_t)w1 << 32 | w0) >> (8 * (r->eip & 3));
    if ((bytes & 0xffffu) != 0x320f)            /* 0f 32: rdmsr, no prefix */
        return -1;
    for (uint32_t i = 0; i < v->nr_fast_msrs && i < SHIM_MAX_FAST_MSRS; i++) {
        if (v->fast_msrs[i].idx == r->ecx) {
            if (v->fast_msrs[i].python)         /* readable, value of the moment */
                return -1;
            r->eax = v->fast_msrs[i].lo;
            r->edx = v->fast_msrs[i].hi;
            r->eip += 2;
            r->eflags &= ~EFLAGS_RF;
            v->stat_fast++;
            return 0;
        }
    }
    struct shim_trap *t = &v->traps[13];
    if (!(t->cs & ~3u))
        return -1;                              /* no handler: Python crashes it */
    v->stat_fast++;
    note_trap(mbox(v), 13, 0, r, 0);
    bounce_or_crash(v, t->cs, t->eip,
                    SHIM_TBF_ERRCODE | ((t->flags & SHIM_TI_IF) ? SHIM_TBF_INTERRUPT : 0), 0);
    return 0;
}

/* Python answered `act` to a request of `kind`: apply its decision. */
static void apply(struct shim_vcpu *v, uint32_t act, uint32_t kind)
{
    for (;;) {
        if (act & SHIM_ACT_HALT)
            halt_forever();
        if (act & SHIM_ACT_GDT) {
            struct { uint16_t limit; uint32_t base; } __attribute__((packed)) gdtr = {
                (uint16_t)v->gdt_limit, SHIM_GDT_BASE + v->vcpu_id * SHIM_GDT_STRIDE };
            __asm__ __volatile__("lgdt %0" :: "m"(gdtr) : "memory");
        }
        if (act & SHIM_ACT_LDT)
            __asm__ __volatile__("lldt %w0" :: "r"(v->ldt_sel) : "memory");
        if (act & SHIM_ACT_FPU) {
            uint32_t cr0 = read_cr0();
            write_cr0(v->fpu_ts ? (cr0 | 8) : (cr0 & ~8u));
        }
        if (act & SHIM_ACT_TIMER)
            timer_arm(v);
        if (act & SHIM_ACT_DR) {
            __asm__ __volatile__("movl %0, %%db0" :: "r"(v->dr[0]));
            __asm__ __volatile__("movl %0, %%db1" :: "r"(v->dr[1]));
            __asm__ __volatile__("movl %0, %%db2" :: "r"(v->dr[2]));
            __asm__ __volatile__("movl %0, %%db3" :: "r"(v->dr[3]));
            __asm__ __volatile__("movl %0, %%db7" :: "r"(v->dr[7]));
        }
        if (act & SHIM_ACT_START_AP)
            lapic_start_ap(v->start_ap);
        if (act & SHIM_ACT_RETRY) {
            /* Sleep until any interrupt, then ask again -- unless a kick
             * already came while we waited for this answer (it may have
             * been the very wake-up this RETRY waits for). */
            timer_arm(v);
            if (v->stat_kicks == v->kicks_at_post)
                sti_hlt_cli();
            /* Served (or moot): Python sets it again if it still waits.  A
             * stale deadline would re-arm the APIC timer at once, forever. */
            v->wake_deadline = 0;
            act = post_and_wait(v, kind);
            continue;
        }
        if (act & SHIM_ACT_BOUNCE) {
            struct shim_trap *t = &v->traps[v->bounce_vector & 0xff];
            volatile uint8_t *vi = vcpu_info(v);
            note_trap(mbox(v), v->bounce_vector & 0xff, v->bounce_errcode, estack_frame(v),
                      (v->bounce_vector == 14 && vi) ? *(volatile uint32_t *)(vi + SHIM_VI_CR2) : 0);
            bounce_or_crash(v, t->cs, t->eip, v->bounce_flags, v->bounce_errcode);
        }
        if (act & SHIM_ACT_FAILSAFE)
            bounce_or_crash(v, v->failsafe_cs, v->failsafe_eip,
                            SHIM_TBF_FAILSAFE | (v->bounce_flags & SHIM_TBF_INTERRUPT), 0);
        if (act & SHIM_ACT_BLOCK) {
            volatile uint8_t *vi = vcpu_info(v);
            v->stat_blocks++;
            for (;;) {
                if (vi && vi[0])
                    break;
                if (v->wake_deadline && shim_now() >= v->wake_deadline) {
                    v->wake_deadline = 0;
                    break;
                }
                timer_arm(v);
                sti_hlt_cli();
            }
            time_update_vcpu(v);
        }
        return;
    }
}

static void handle_request(struct shim_vcpu *v, uint32_t kind)
{
    apply(v, post_and_wait(v, kind), kind);
}

/* Deliver pending events, check the frame the way Xen checks an iret
 * frame, stage it on the entry stack and return to the guest. */
static __attribute__((noreturn)) void leave_to_guest(struct shim_vcpu *v)
{
    while (v->park)                         /* VCPUOP_down: wait for up */
        handle_request(v, SHIM_REQ_PARKED);
    volatile uint8_t *vi = vcpu_info(v);
    if (vi && v->event_cs && vi[0] && !vi[1]) {
        v->stat_upcalls++;
        bounce_or_crash(v, v->event_cs, v->event_eip, SHIM_TBF_INTERRUPT, 0);
    }
    struct xen_regs *r = estack_frame(v);
    unsigned rpl = r->cs & 3;
    if (rpl == 0 || (r->ss & 3) != rpl) {
        handle_request(v, SHIM_REQ_BAD_FRAME);
        halt_forever();
    }
    r->eflags = (r->eflags & ~(EFLAGS_IOPL | EFLAGS_VM | EFLAGS_NT)) | EFLAGS_IF | 2;
    r->saved_upcall_mask = 0;
    r->_pad0 = 0;
    shim_exit_to_guest(r, v->guest_cr3);
}

/* ---- entries ----------------------------------------------------------- */
void shim_vcpu_start(struct shim_vcpu *v)
{
    handle_request(v, SHIM_REQ_BOOT);
    v->periodic_next = shim_now() + v->periodic_ns;
    time_update_vcpu(v);
    timer_arm(v);
    leave_to_guest(v);
}

void shim_guest_entry(struct xen_regs *frame)
{
    struct shim_vcpu *v = this_vcpu();
    unsigned vec = frame->entry_vector;

    v->stat_entries++;
    frame->saved_upcall_mask = 0;           /* the CPU may leave junk here */
    frame->_pad0 = 0;
    if (vec == SHIM_VEC_TIMER) {
        lapic_eoi();
        timer_irq(v);
    } else if (vec == SHIM_VEC_KICK) {
        lapic_eoi();
        v->stat_kicks++;
    } else if (vec == 13 && !fast_rdmsr(v, frame)) {
        /* answered without Python */
    } else if (vec < 32) {
        struct shim_mbox *m = mbox(v);
        m->trap_vector = vec;
        m->trap_errcode = frame->error_code;
        m->trap_cr2 = vec == 14 ? read_cr2() : 0;
        if (vec == 1) {                     /* report and reset DR6 */
            uint32_t dr6;
            __asm__ __volatile__("movl %%db6, %0" : "=r"(dr6));
            m->trap_cr2 = dr6;
            __asm__ __volatile__("movl %0, %%db6" :: "r"(0xffff0ff0u));
        }
        handle_request(v, SHIM_REQ_TRAP);
    } else if (vec != SHIM_VEC_SPURIOUS) {
        lapic_eoi();
    }
    leave_to_guest(v);
}

/* A guest-view fast path (fastpath.c) finished the frame; the exit needs C. */
void shim_resume(struct xen_regs *frame)
{
    (void)frame;
    leave_to_guest(this_vcpu());
}

/* The hypercall fast path (entry.S) posted the request and either gave up
 * spinning (how = 1) or got an answer that needs more than an iret (0);
 * or it left the iret hypercall to us unposted (2). */
void shim_hypercall_slow(struct xen_regs *frame, int how)
{
    struct shim_vcpu *v = this_vcpu();
    struct shim_mbox *m = mbox(v);
    uint32_t act;

    v->stat_entries++;
    frame->saved_upcall_mask = 0;
    frame->_pad0 = 0;
    if (how == 2)
        act = fast_iret(v) ? post_and_wait(v, SHIM_REQ_HYPERCALL) : 0;
    else if (how == 1)
        act = wait_answer(v, m->req_seq, 1);
    else
        act = m->resp_action;
    apply(v, act, SHIM_REQ_HYPERCALL);
    leave_to_guest(v);
}

void shim_ring0_entry(struct ring0_frame *f)
{
    struct shim_vcpu *v = this_vcpu();
    unsigned vec = f->vector;

    if (vec == SHIM_VEC_TIMER) {
        lapic_eoi();
        if (v && v->in_request)
            v->deferred_timer = 1;
        else if (v)
            timer_irq(v);
        return;
    }
    if (vec == SHIM_VEC_KICK) {
        lapic_eoi();
        if (v)
            v->stat_kicks++;
        return;
    }
    if (vec == SHIM_VEC_SPURIOUS)
        return;
    if (vec == 1) {
        /* A guest watchpoint hit by the shim's own access to guest memory
         * (or a guest address the shim's identity map shares): Xen ignores
         * these in hypervisor context.  RF steps over an instruction match. */
        __asm__ __volatile__("movl %0, %%db6" :: "r"(0xffff0ff0u));
        f->eflags |= EFLAGS_RF;
        return;
    }
    if (v && vec < 32 && f->eip >= (uint32_t)exit_fault_start &&
        f->eip < (uint32_t)exit_fault_end) {
        /* The guest frame could not be loaded: a selector or the iret. */
        mbox(v)->fault_eip = f->eip;
        mbox(v)->fault_vector = vec;
        mbox(v)->trap_errcode = f->error_code;
        handle_request(v, SHIM_REQ_EXIT_FAULT);
        leave_to_guest(v);
    }
    panic("unexpected exception in the shim", vec, f->eip);
}
