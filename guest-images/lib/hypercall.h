/*
 * Hypercall wrappers for a 32-bit PV guest.
 *
 * The ABI (arch-x86/xen-x86_32.h): `call hypercall_page + nr * 32` with
 * arguments in %ebx, %ecx, %edx, %esi, %edi, the result in %eax, and the
 * argument registers clobbered.  Xen writes the stubs into hypercall_page
 * (see head.S) before the guest starts.  64-bit values are passed as two
 * consecutive 32-bit arguments, low word first.
 */
#ifndef HYPERCALL_H
#define HYPERCALL_H

#include "compiler.h"
#include "xen-abi.h"

extern char hypercall_page[4096];

/*
 * One macro for every arity: unused arguments are passed as 0.  Each
 * register is an in/out operand so the compiler treats it as clobbered.
 */
#define _hypercall(nr, a1, a2, a3, a4, a5) ({                           \
        long res_;                                                      \
        unsigned long b_ = (unsigned long)(a1);                         \
        unsigned long c_ = (unsigned long)(a2);                         \
        unsigned long d_ = (unsigned long)(a3);                         \
        unsigned long si_ = (unsigned long)(a4);                        \
        unsigned long di_ = (unsigned long)(a5);                        \
        __asm__ __volatile__ ("call hypercall_page + %c[offset]"        \
                              : "=a" (res_), "+b" (b_), "+c" (c_),      \
                                "+d" (d_), "+S" (si_), "+D" (di_)       \
                              : [offset] "i" ((nr) * HYPERCALL_STUB_SIZE) \
                              : "memory");                              \
        res_;                                                           \
    })

static inline long hypercall_set_trap_table(const struct trap_info *traps)
{
    return _hypercall(__HYPERVISOR_set_trap_table, traps, 0, 0, 0, 0);
}

/* done may be NULL; dom is DOMID_SELF for our own page tables. */
static inline long hypercall_mmu_update(struct mmu_update *reqs,
                                        unsigned int count,
                                        unsigned int *done, domid_t dom)
{
    return _hypercall(__HYPERVISOR_mmu_update, reqs, count, done, dom, 0);
}

/*
 * PAE: the 64-bit PTE goes in two words, then the UVMF_* flags.  Non-PAE:
 * the 32-bit PTE is one word (the high half of `pte` is ignored).
 */
static inline long hypercall_update_va_mapping(unsigned long va, uint64_t pte,
                                               unsigned long flags)
{
#ifdef CONFIG_PAE
    return _hypercall(__HYPERVISOR_update_va_mapping, va, (uint32_t)pte,
                      (uint32_t)(pte >> 32), flags, 0);
#else
    return _hypercall(__HYPERVISOR_update_va_mapping, va, (uint32_t)pte,
                      flags, 0, 0);
#endif
}

/* Absolute deadline in ns of system time; 0 cancels the timer. */
static inline long hypercall_set_timer_op(uint64_t deadline_ns)
{
    return _hypercall(__HYPERVISOR_set_timer_op, (uint32_t)deadline_ns,
                      (uint32_t)(deadline_ns >> 32), 0, 0, 0);
}

static inline long hypercall_xen_version(int cmd, void *arg)
{
    return _hypercall(__HYPERVISOR_xen_version, cmd, arg, 0, 0, 0);
}

static inline long hypercall_console_io(int cmd, unsigned int count,
                                        const char *buf)
{
    return _hypercall(__HYPERVISOR_console_io, cmd, count, buf, 0, 0);
}

static inline long hypercall_vm_assist(unsigned int cmd, unsigned int type)
{
    return _hypercall(__HYPERVISOR_vm_assist, cmd, type, 0, 0, 0);
}

static inline long hypercall_sched_op(int cmd, void *arg)
{
    return _hypercall(__HYPERVISOR_sched_op, cmd, arg, 0, 0, 0);
}

static inline long hypercall_callback_op(int cmd, const void *arg)
{
    return _hypercall(__HYPERVISOR_callback_op, cmd, arg, 0, 0, 0);
}

static inline long hypercall_event_channel_op(int cmd, void *arg)
{
    return _hypercall(__HYPERVISOR_event_channel_op, cmd, arg, 0, 0, 0);
}

#endif /* HYPERCALL_H */
