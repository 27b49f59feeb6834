/*
 * Wrappers for the hypercalls the ABI test guests use beyond hypercall.h
 * (same convention: `call hypercall_page + nr * 32`, arguments in %ebx,
 * %ecx, %edx, %esi, %edi, the result in %eax).
 */
#ifndef HYPERCALL_EXT_H
#define HYPERCALL_EXT_H

#include "hypercall.h"
#include "xen-abi-ext.h"

static inline long hypercall_mmuext_op(struct mmuext_op *ops, unsigned int count,
                                       unsigned int *done, domid_t dom)
{
    return _hypercall(__HYPERVISOR_mmuext_op, ops, count, done, dom, 0);
}

static inline long hypercall_set_gdt(const unsigned long *frames,
                                     unsigned int entries)
{
    return _hypercall(__HYPERVISOR_set_gdt, frames, entries, 0, 0, 0);
}

static inline long hypercall_stack_switch(unsigned long ss, unsigned long esp)
{
    return _hypercall(__HYPERVISOR_stack_switch, ss, esp, 0, 0, 0);
}

static inline long hypercall_fpu_taskswitch(int set)
{
    return _hypercall(__HYPERVISOR_fpu_taskswitch, set, 0, 0, 0, 0);
}

static inline long hypercall_set_debugreg(int reg, unsigned long value)
{
    return _hypercall(__HYPERVISOR_set_debugreg, reg, value, 0, 0, 0);
}

static inline long hypercall_get_debugreg(int reg)
{
    return _hypercall(__HYPERVISOR_get_debugreg, reg, 0, 0, 0, 0);
}

/* update_descriptor(u64 machine address, u64 descriptor), each as 2 words. */
static inline long hypercall_update_descriptor(uint64_t maddr, uint64_t desc)
{
    return _hypercall(__HYPERVISOR_update_descriptor, (uint32_t)maddr,
                      (uint32_t)(maddr >> 32), (uint32_t)desc,
                      (uint32_t)(desc >> 32), 0);
}

static inline long hypercall_memory_op(unsigned int cmd, void *arg)
{
    return _hypercall(__HYPERVISOR_memory_op, cmd, arg, 0, 0, 0);
}

static inline long hypercall_multicall(struct multicall_entry *calls,
                                       unsigned int nr)
{
    return _hypercall(__HYPERVISOR_multicall, calls, nr, 0, 0, 0);
}

/* PAE: (va, pte_lo, pte_hi, flags, domid); non-PAE: (va, pte, flags, domid). */
static inline long hypercall_update_va_mapping_otherdomain(
    unsigned long va, uint64_t pte, unsigned long flags, domid_t dom)
{
#ifdef CONFIG_PAE
    return _hypercall(__HYPERVISOR_update_va_mapping_otherdomain, va,
                      (uint32_t)pte, (uint32_t)(pte >> 32), flags, dom);
#else
    return _hypercall(__HYPERVISOR_update_va_mapping_otherdomain, va,
                      (uint32_t)pte, flags, dom, 0);
#endif
}

static inline long hypercall_vcpu_op(int cmd, unsigned int vcpu, void *arg)
{
    return _hypercall(__HYPERVISOR_vcpu_op, cmd, vcpu, arg, 0, 0);
}

static inline long hypercall_physdev_op(int cmd, void *arg)
{
    return _hypercall(__HYPERVISOR_physdev_op, cmd, arg, 0, 0, 0);
}

/* Any hypercall by number, for probing bad arguments. */
static inline long hypercall_raw(unsigned int nr, unsigned long a1,
                                 unsigned long a2, unsigned long a3,
                                 unsigned long a4, unsigned long a5)
{
    long res;
    unsigned long b = a1, c = a2, d = a3, si = a4, di = a5;

    __asm__ __volatile__ ("shll $5, %%eax\n\t"
                          "addl $hypercall_page, %%eax\n\t"
                          "call *%%eax"
                          : "=a" (res), "+b" (b), "+c" (c), "+d" (d),
                            "+S" (si), "+D" (di)
                          : "0" (nr)
                          : "memory");
    return res;
}

#endif /* HYPERCALL_EXT_H */
