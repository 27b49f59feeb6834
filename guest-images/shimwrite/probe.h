/*
 * Memory probes that survive faults: each access has an exception-table
 * entry, and fault_hook() (installed for #PF and #GP) records the fault
 * and resumes at the fixup instead of crashing.
 */
#ifndef PROBE_H
#define PROBE_H

#include "xenguest.h"

struct fault_record {
    unsigned long count;
    unsigned int vector;
    uint32_t error_code;
    uint32_t eip;
    unsigned long cr2;
};

extern struct fault_record last_fault;

void probes_init(void);

/* True if reading the word at addr faulted. */
static inline bool read_faults(unsigned long addr)
{
    unsigned int faulted = 0, tmp;

    __asm__ __volatile__ (
        "1:  movl (%[p]), %[tmp]\n"
        "2:\n"
        ".pushsection .fixup, \"ax\"\n"
        "3:  movl $1, %[f]\n"
        "    jmp 2b\n"
        ".popsection\n"
        _ASM_EXTABLE(1b, 3b)
        : [f] "+r" (faulted), [tmp] "=r" (tmp)
        : [p] "r" (addr)
        : "memory");
    return faulted;
}

/*
 * True if writing the word at addr faulted.  The write stores back what
 * the read found, so a write that wrongly succeeds changes nothing.  If
 * the read faults, the write is still attempted (with 0).
 */
static inline bool write_faults(unsigned long addr)
{
    unsigned int faulted = 0, tmp = 0;

    __asm__ __volatile__ (
        "1:  movl (%[p]), %[tmp]\n"
        "2:  movl %[tmp], (%[p])\n"
        "3:\n"
        ".pushsection .fixup, \"ax\"\n"
        "4:  movl $1, %[f]\n"
        "    jmp 3b\n"
        ".popsection\n"
        _ASM_EXTABLE(1b, 2b)            /* unreadable: try the write */
        _ASM_EXTABLE(2b, 4b)
        : [f] "+r" (faulted), [tmp] "+r" (tmp)
        : [p] "r" (addr)
        : "memory");
    return faulted;
}

#endif /* PROBE_H */
