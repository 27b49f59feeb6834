/*
 * Exception tables: code that expects a fault records (faulting EIP,
 * fixup EIP) with _ASM_EXTABLE(); a hook calls extable_fixup() to resume
 * at the fixup instead of crashing.
 */
#include "traps.h"

/* Bounds of the .extable section (guest.ld). */
extern const struct extable_entry __start_extable[], __stop_extable[];

bool extable_fixup(struct cpu_regs *regs)
{
    const struct extable_entry *e;

    for (e = __start_extable; e < __stop_extable; e++) {
        if (e->fault == regs->eip) {
            regs->eip = e->fixup;
            return true;
        }
    }
    return false;
}
