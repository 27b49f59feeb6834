/*
 * The #PF/#GP hook behind the probes in probe.h.
 */
#include "probe.h"

struct fault_record last_fault;

static bool fault_hook(struct cpu_regs *regs, unsigned long cr2)
{
    uint32_t eip = regs->eip;

    /* A fault outside a probe is a real bug: let it be fatal. */
    if (!extable_fixup(regs))
        return false;

    last_fault.count++;
    last_fault.vector = regs->vector;
    last_fault.error_code = regs->error_code;
    last_fault.eip = eip;
    last_fault.cr2 = cr2;
    return true;
}

void probes_init(void)
{
    set_exception_hook(X86_EXC_PF, fault_hook);
    set_exception_hook(X86_EXC_GP, fault_hook);
}
