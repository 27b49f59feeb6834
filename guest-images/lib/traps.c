/*
 * Exception handling: the trap table, per-vector hooks, and the fatal
 * path that reports a fault and crashes the domain.
 */
#include "console.h"
#include "hypercall.h"
#include "mm.h"
#include "sched.h"
#include "traps.h"
#include "events.h"

extern const uint32_t exception_entry_points[NR_EXCEPTIONS];   /* entry.S */
extern char stack[], stack_top[];                              /* head.S */

static const char *const exception_names[NR_EXCEPTIONS] = {
    [X86_EXC_DE]  = "#DE divide error",
    [X86_EXC_DB]  = "#DB debug",
    [X86_EXC_NMI] = "NMI",
    [X86_EXC_BP]  = "#BP breakpoint",
    [X86_EXC_OF]  = "#OF overflow",
    [X86_EXC_BR]  = "#BR bound range exceeded",
    [X86_EXC_UD]  = "#UD invalid opcode",
    [X86_EXC_NM]  = "#NM device not available",
    [X86_EXC_DF]  = "#DF double fault",
    [9]           = "coprocessor segment overrun",
    [X86_EXC_TS]  = "#TS invalid TSS",
    [X86_EXC_NP]  = "#NP segment not present",
    [X86_EXC_SS]  = "#SS stack-segment fault",
    [X86_EXC_GP]  = "#GP general protection",
    [X86_EXC_PF]  = "#PF page fault",
    [15]          = "reserved vector 15",
    [X86_EXC_MF]  = "#MF x87 floating-point error",
    [X86_EXC_AC]  = "#AC alignment check",
    [X86_EXC_MC]  = "#MC machine check",
    [X86_EXC_XM]  = "#XM SIMD floating-point error",
};

static exception_hook_t exception_hooks[NR_EXCEPTIONS];

const char *exception_name(unsigned int vector)
{
    if (vector < NR_EXCEPTIONS)
        return exception_names[vector];
    return "unknown vector";
}

void traps_init(void)
{
    /* One entry per vector, then a zero entry that ends the table. */
    static struct trap_info table[NR_EXCEPTIONS + 1];
    unsigned int v;
    long rc;

    for (v = 0; v < NR_EXCEPTIONS; v++) {
        /* int3 and into must work from any ring, like on bare metal. */
        unsigned int dpl = (v == X86_EXC_BP || v == X86_EXC_OF) ? 3 : 0;

        table[v].vector = v;
        table[v].flags = TI_DPL(dpl);
        table[v].cs = FLAT_KERNEL_CS;
        table[v].address = exception_entry_points[v];
    }

    rc = hypercall_set_trap_table(table);
    if (rc) {
        early_printk("set_trap_table failed: %ld\n", rc);
        xen_shutdown(SHUTDOWN_crash);
    }
}

void set_exception_hook(unsigned int vector, exception_hook_t hook)
{
    if (vector < NR_EXCEPTIONS)
        exception_hooks[vector] = hook;
}

/* Xen stores the #PF address in vcpu_info, since CR2 is not ours to read. */
static unsigned long fault_address(void)
{
    if (!shared_info)
        return 0;
    return READ_ONCE(this_vcpu()->arch.cr2);
}

static bool on_our_stack(unsigned long addr, unsigned long size)
{
    return addr >= (unsigned long)stack &&
           addr + size <= (unsigned long)stack_top && !(addr & 3);
}

void show_regs(const struct cpu_regs *regs)
{
    unsigned long fp = regs->ebp;
    unsigned int depth;

    printk("EIP: %04x:%08x  EFLAGS: %08x  saved upcall mask: %u\n",
           regs->cs & 0xffff, regs->eip, regs->eflags,
           (regs->cs >> 16) & 0xff);
    printk("EAX: %08x  EBX: %08x  ECX: %08x  EDX: %08x\n",
           regs->eax, regs->ebx, regs->ecx, regs->edx);
    printk("ESI: %08x  EDI: %08x  EBP: %08x  ESP: %08lx\n",
           regs->esi, regs->edi, regs->ebp, regs_esp(regs));

    /* Frame-pointer walk (-fno-omit-frame-pointer): [ebp] = caller's ebp,
     * [ebp + 4] = return address.  Only trust frames on our own stack. */
    printk("Call trace:\n  [<%08x>]\n", regs->eip);
    for (depth = 0; depth < 16 && on_our_stack(fp, 8); depth++) {
        const unsigned long *frame = (const unsigned long *)fp;

        printk("  [<%08lx>]\n", frame[1]);
        if (frame[0] <= fp)
            break;
        fp = frame[0];
    }
}

static void __noreturn fatal_exception(const struct cpu_regs *regs,
                                       unsigned long cr2)
{
    static bool reporting;

    if (reporting) {
        /* Faulted while reporting: say so by the simplest route. */
        early_printk("*** nested %s at %08x while reporting a crash\n",
                     exception_name(regs->vector), regs->eip);
        xen_shutdown_now(SHUTDOWN_crash);
    }
    reporting = true;

    printk("\n*** Fatal exception %u: %s, error code 0x%04x\n",
           regs->vector, exception_name(regs->vector), regs->error_code);
    if (regs->vector == X86_EXC_PF)
        printk("*** CR2 %08lx: %s of a %s page in ring %u\n", cr2,
               (regs->error_code & 2) ? "write" : "read",
               (regs->error_code & 1) ? "protected" : "not-present",
               (regs->cs & 3));
    show_regs(regs);
    printk("*** Crashing the domain.\n");
    xen_shutdown(SHUTDOWN_crash);
}

void do_exception(struct cpu_regs *regs)
{
    /* Read CR2 first: a nested #PF would overwrite it. */
    unsigned long cr2 = regs->vector == X86_EXC_PF ? fault_address() : 0;

    if (regs->vector < NR_EXCEPTIONS && exception_hooks[regs->vector] &&
        exception_hooks[regs->vector](regs, cr2))
        return;

    fatal_exception(regs, cr2);
}

void do_failsafe(const uint32_t *frame)
{
    printk("\n*** Failsafe callback: Xen could not load DS %04x ES %04x "
           "FS %04x GS %04x returning to %04x:%08x\n",
           frame[0] & 0xffff, frame[1] & 0xffff, frame[2] & 0xffff,
           frame[3] & 0xffff, frame[5] & 0xffff, frame[4]);
    xen_shutdown(SHUTDOWN_crash);
}
