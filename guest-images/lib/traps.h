/*
 * Exceptions: the register frame the entry stubs build and the hooks a
 * guest can install.  Included from entry.S for the constants.
 */
#ifndef TRAPS_H
#define TRAPS_H

#define NR_EXCEPTIONS           20      /* vectors 0-19 get a trap-table entry */
#define VECTOR_EVENT_UPCALL     256     /* struct cpu_regs.vector of an upcall */

#define X86_EXC_DE      0
#define X86_EXC_DB      1
#define X86_EXC_NMI     2
#define X86_EXC_BP      3
#define X86_EXC_OF      4
#define X86_EXC_BR      5
#define X86_EXC_UD      6
#define X86_EXC_NM      7
#define X86_EXC_DF      8
#define X86_EXC_TS      10
#define X86_EXC_NP      11
#define X86_EXC_SS      12
#define X86_EXC_GP      13
#define X86_EXC_PF      14
#define X86_EXC_MF      16
#define X86_EXC_AC      17
#define X86_EXC_MC      18
#define X86_EXC_XM      19

#ifndef __ASSEMBLER__

#include "compiler.h"

/* Built by entry.S; lowest address first. */
struct cpu_regs {
    uint32_t ebx, ecx, edx, esi, edi, ebp, eax;    /* pushed by the stub */
    uint32_t vector;                               /* pushed by the stub */
    uint32_t error_code;                           /* by Xen, or 0 */
    uint32_t eip;                                  /* from here on: Xen */
    uint32_t cs;        /* bits 16-23: saved upcall mask */
    uint32_t eflags;
    uint32_t esp, ss;   /* present only if the interrupted code was ring 3 */
};
_Static_assert(__builtin_offsetof(struct cpu_regs, eip) == 36,
               "entry.S pushes 9 words before Xen's frame");

/*
 * A hook sees the frame and the #PF address (0 for other vectors).  It
 * returns true if it handled the exception (e.g. moved regs->eip to a
 * fixup); the stub then resumes the context in *regs.
 */
typedef bool (*exception_hook_t)(struct cpu_regs *regs, unsigned long cr2);

void traps_init(void);
void set_exception_hook(unsigned int vector, exception_hook_t hook);
const char *exception_name(unsigned int vector);

/* Where the interrupted code's stack pointer was. */
static inline unsigned long regs_esp(const struct cpu_regs *regs)
{
    if ((regs->cs & 3) == 3)
        return regs->esp;
    return (unsigned long)&regs->esp;  /* same ring: Xen pushed no ESP/SS */
}

/* Exception tables (extable.c): (faulting EIP, fixup EIP) pairs. */
struct extable_entry {
    unsigned long fault;
    unsigned long fixup;
};

/*
 * Emit an exception-table entry from inline assembly: a fault at `from`
 * resumes at `to`.
 */
#define _ASM_EXTABLE(from, to)                          \
    ".pushsection .extable, \"a\"\n"                    \
    ".balign 4\n"                                       \
    ".long " #from ", " #to "\n"                        \
    ".popsection\n"

/* If regs->eip has an entry, point regs->eip at its fixup; true if so. */
bool extable_fixup(struct cpu_regs *regs);

/* Entry points (entry.S, called by Xen only). */
void do_exception(struct cpu_regs *regs);
void do_event_upcall(struct cpu_regs *regs);
void __noreturn do_failsafe(const uint32_t *frame);

/* Print the frame (and a frame-pointer backtrace). */
void show_regs(const struct cpu_regs *regs);

#endif /* !__ASSEMBLER__ */
#endif /* TRAPS_H */
