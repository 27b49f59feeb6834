/*
 * smp: bring up every secondary vCPU with VCPUOP_initialise/up, make each
 * answer an event-channel IPI, take one down and up again.  Reports like
 * XTF: "check <name>: ok|FAIL", then "Test result: ...".
 */
#include "xenguest.h"
#include "xen-abi-ext.h"

#define __HYPERVISOR_vcpu_op    24
#define VCPUOP_initialise       0
#define VCPUOP_up               1
#define VCPUOP_down             2
#define VCPUOP_is_up            3
#define EVTCHNOP_bind_ipi       7
#define EVTCHNOP_send           4
#define SCHEDOP_poll            3
#define MAX_CPUS                32

/* vcpu_guest_context (x86_32): 2800 bytes, offsets from xen-abi-i686.md */
struct vcpu_guest_context {
    uint8_t  fpu_ctxt[512];
    uint32_t flags;                     /* 512 */
    uint32_t user_regs[17];             /* 516: ebx ecx edx esi edi ebp eax err/vec eip cs eflags esp ss es ds fs gs */
    uint8_t  trap_ctxt[2048];           /* 584 */
    uint32_t ldt_base, ldt_ents;        /* 2632 */
    uint32_t gdt_frames[16];            /* 2640 */
    uint32_t gdt_ents;                  /* 2704 */
    uint32_t kernel_ss, kernel_sp;      /* 2708 */
    uint32_t ctrlreg[8];                /* 2716 */
    uint32_t debugreg[8];               /* 2748 */
    uint32_t event_callback_cs, event_callback_eip;     /* 2780 */
    uint32_t failsafe_callback_cs, failsafe_callback_eip;
    uint32_t vm_assist;                 /* 2796 */
};
_Static_assert(sizeof(struct vcpu_guest_context) == 2800, "vcpu_guest_context");

static struct vcpu_guest_context ctx;
static uint8_t stacks[MAX_CPUS][4096] __attribute__((aligned(4096)));
static volatile uint32_t arrived[MAX_CPUS], answered[MAX_CPUS], ipi_port[MAX_CPUS];
static volatile uint32_t spins[MAX_CPUS];
static int failures;

/* The TLB probe: vCPU 0 remaps probe_page between two frames with
 * update_va_mapping(UVMF_INVLPG | UVMF_ALL); each prober reads it in a
 * tight loop (a hot TLB entry) and records what it read right after it saw
 * the new generation.  Xen flushes the other vCPUs before the hypercall
 * returns, so that read must already see the new frame. */
#define PROBERS         3
static uint8_t probe_page[4096] __attribute__((aligned(4096)));
static uint8_t probe_other[4096] __attribute__((aligned(4096)));
static volatile uint32_t probe_on, probe_gen, probe_ready[MAX_CPUS];
static volatile uint32_t probe_seen_gen[MAX_CPUS], probe_val[MAX_CPUS];

static void probe_loop(uint32_t id)
{
    volatile uint32_t *va = (volatile uint32_t *)probe_page;
    probe_ready[id] = 1;
    while (probe_on) {
        uint32_t g = probe_gen;
        __asm__ __volatile__("" ::: "memory");
        uint32_t v = *va;
        if (g != probe_seen_gen[id]) {
            probe_val[id] = v;
            __sync_synchronize();
            probe_seen_gen[id] = g;
        }
    }
    probe_ready[id] = 0;
}

/* Yield until *flag != old, for at most two seconds of system time. */
static int wait_change(volatile uint32_t *flag, uint32_t old)
{
    uint64_t end = system_time_ns() + 2000000000ull;
    while (*flag == old && system_time_ns() < end)
        hypercall_sched_op(SCHEDOP_yield, NULL);
    return *flag != old;
}

static long vcpu_op(int cmd, int vcpu, void *arg)
{
    return _hypercall(__HYPERVISOR_vcpu_op, cmd, vcpu, arg, 0, 0);
}

static void check(const char *name, int ok, const char *why)
{
    printk("check %s: %s%s\n", name, ok ? "ok" : "FAIL ", ok ? "" : why);
    if (!ok)
        failures++;
}

/* A secondary vCPU starts here (ESI = its id): bind an IPI port, say so,
 * then answer every IPI (polled, events stay masked on this vCPU). */
void ap_entry(uint32_t id);
__asm__(".globl ap_start\nap_start:\n\tpushl %esi\n\tcall ap_entry\n1:\tjmp 1b\n");

void ap_entry(uint32_t id)
{
    struct evtchn_bind_ipi { uint32_t vcpu, port; } b = { id, 0 };
    if (hypercall_event_channel_op(EVTCHNOP_bind_ipi, &b) == 0) {
        /* masked: vCPU 0's upcall handler must not take this vCPU's events
         * (SCHEDOP_poll wakes on masked ports) */
        __sync_fetch_and_or(&shared_info->evtchn_mask[b.port / 32], 1u << (b.port % 32));
        ipi_port[id] = b.port;
    }
    __sync_synchronize();
    arrived[id] = 1;
    for (;;) {
        uint32_t port = ipi_port[id];
        struct { uint32_t ports; uint32_t nr; uint64_t timeout; } poll = {
            (uint32_t)&port, 1, 0 };
        hypercall_sched_op(SCHEDOP_poll, &poll);
        if (__sync_fetch_and_and(&shared_info->evtchn_pending[port / 32],
                                 ~(1u << (port % 32))) & (1u << (port % 32)))
            answered[id]++;
        if (probe_on)
            probe_loop(id);
        spins[id]++;
    }
}

extern char ap_start[];

int main(void)
{
    int n = 0;
    while (n < MAX_CPUS && vcpu_op(VCPUOP_is_up, n, NULL) >= 0)
        n++;
    printk("smp: %d vCPUs\n", n);
    check("vcpu0-is-up", vcpu_op(VCPUOP_is_up, 0, NULL) == 1, "vCPU 0 not up");

    for (int i = 1; i < n; i++) {
        memset(&ctx, 0, sizeof(ctx));
        ctx.flags = 1 << 2;                                     /* VGCF_in_kernel */
        ctx.user_regs[3] = i;                                   /* esi */
        ctx.user_regs[8] = (uint32_t)ap_start;                  /* eip */
        ctx.user_regs[9] = FLAT_KERNEL_CS;
        ctx.user_regs[10] = 0x200;                              /* eflags */
        ctx.user_regs[11] = (uint32_t)&stacks[i][4096];         /* esp */
        ctx.user_regs[12] = FLAT_KERNEL_DS;                     /* ss */
        ctx.user_regs[13] = ctx.user_regs[14] = FLAT_KERNEL_DS;
        ctx.kernel_ss = FLAT_KERNEL_DS;
        ctx.kernel_sp = (uint32_t)&stacks[i][4096];
        uint32_t l3_mfn = virt_to_mfn((void *)start_info->pt_base);
        ctx.ctrlreg[3] = (l3_mfn << 12) | (l3_mfn >> 20);       /* xen_pfn_to_cr3 */
        check("initialise", vcpu_op(VCPUOP_initialise, i, &ctx) == 0, "refused");
        check("initialise-twice", vcpu_op(VCPUOP_initialise, i, &ctx) == -17, "not -EEXIST");
        check("is-down-before-up", vcpu_op(VCPUOP_is_up, i, NULL) == 0, "up too early");
        check("up", vcpu_op(VCPUOP_up, i, NULL) == 0, "refused");
        check("secondary-runs", wait_change(&arrived[i], 0), "never ran");
        check("is-up", vcpu_op(VCPUOP_is_up, i, NULL) == 1, "not up");
    }
    for (int i = 1; i < n; i++) {
        struct { uint32_t port; } send = { ipi_port[i] };
        uint32_t before = answered[i];
        check("ipi-send", hypercall_event_channel_op(EVTCHNOP_send, &send) == 0, "send failed");
        if (!wait_change(&answered[i], before))
            printk("  vCPU %d: no answer (arrived %u spins %u port %u)\n", i, arrived[i], spins[i], ipi_port[i]);
        check("ipi-answered", answered[i] != before, "no answer");
    }
    if (n > 1) {
        check("down", vcpu_op(VCPUOP_down, 1, NULL) == 0, "refused");
        check("is-down", vcpu_op(VCPUOP_is_up, 1, NULL) == 0, "still up");
        uint32_t s = spins[1];
        for (int t = 0; t < 200; t++)
            hypercall_sched_op(SCHEDOP_yield, NULL);
        struct { uint32_t port; } send = { ipi_port[1] };
        hypercall_event_channel_op(EVTCHNOP_send, &send);
        for (int t = 0; t < 200; t++)
            hypercall_sched_op(SCHEDOP_yield, NULL);
        check("stays-down", spins[1] == s, "ran while down");
        check("up-again", vcpu_op(VCPUOP_up, 1, NULL) == 0, "refused");
        check("continues", wait_change(&spins[1], s), "did not continue");
    }
    if (n > 1) {
        /* remote TLB flushes are complete when update_va_mapping returns */
        int np = n - 1 < PROBERS ? n - 1 : PROBERS, stale = 0, lost = 0;
        uint64_t pte[2] = {
            ((uint64_t)virt_to_mfn(probe_page) << 12) | _PAGE_PRESENT | _PAGE_RW |
                _PAGE_ACCESSED | _PAGE_DIRTY,
            ((uint64_t)virt_to_mfn(probe_other) << 12) | _PAGE_PRESENT | _PAGE_RW |
                _PAGE_ACCESSED | _PAGE_DIRTY };
        *(volatile uint32_t *)probe_page = 0xaaaa0000;
        *(volatile uint32_t *)probe_other = 0xbbbb0000;
        probe_on = 1;
        for (int i = 1; i <= np; i++) {
            struct { uint32_t port; } send = { ipi_port[i] };
            hypercall_event_channel_op(EVTCHNOP_send, &send);
            wait_change(&probe_ready[i], 0);
        }
        for (uint32_t g = 1; g <= 40; g++) {
            if (hypercall_update_va_mapping((unsigned long)probe_page, pte[g & 1],
                                            UVMF_INVLPG | UVMF_ALL) != 0) {
                stale = -1;
                break;
            }
            probe_gen = g;
            for (int i = 1; i <= np; i++) {
                if (!wait_change(&probe_seen_gen[i], g - 1)) {
                    lost++;
                    continue;
                }
                if (probe_val[i] != ((g & 1) ? 0xbbbb0000u : 0xaaaa0000u)) {
                    if (!stale)
                        printk("  vCPU %d read %#x right after flush %u\n", i, probe_val[i], g);
                    stale++;
                }
            }
        }
        probe_on = 0;
        hypercall_update_va_mapping((unsigned long)probe_page, pte[0], UVMF_INVLPG | UVMF_ALL);
        printk("smp: TLB probe: %d vCPU(s), 40 remaps, %d stale read(s), %d lost\n", np,
               stale, lost);
        check("remote-flush-complete", stale == 0 && lost == 0,
              "another vCPU used the old mapping after update_va_mapping(UVMF_ALL) returned");
    }
    printk("Test result: %s\n", failures ? "FAILURE" : "SUCCESS");
    return 0;
}
