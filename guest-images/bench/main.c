/*
 * bench: guest-side measurements for `make bench`.  Times N forwarded null
 * hypercalls (xen_version(XENVER_version)) one by one with the TSC and
 * prints the median and 99th percentile in nanoseconds, then powers off.
 * The command line may say "n=COUNT".
 */
#include "xenguest.h"

#define MAX_SAMPLES 50000

static uint32_t samples[MAX_SAMPLES];

static inline uint64_t tsc(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}

static void sort(uint32_t *a, unsigned n)
{
    /* heapsort: no recursion, no allocation */
    for (unsigned start = n / 2; start-- > 0;) {
        unsigned root = start;
        for (unsigned child; (child = 2 * root + 1) < n; root = child) {
            if (child + 1 < n && a[child] < a[child + 1])
                child++;
            if (a[root] >= a[child])
                break;
            uint32_t t = a[root]; a[root] = a[child]; a[child] = t;
        }
    }
    for (unsigned end = n; end-- > 1;) {
        uint32_t t = a[0]; a[0] = a[end]; a[end] = t;
        unsigned root = 0;
        for (unsigned child; (child = 2 * root + 1) < end; root = child) {
            if (child + 1 < end && a[child] < a[child + 1])
                child++;
            if (a[root] >= a[child])
                break;
            t = a[root]; a[root] = a[child]; a[child] = t;
        }
    }
}

static unsigned parse_n(const char *cmdline)
{
    const char *p = cmdline;
    unsigned n = 0;
    while (*p && !(p[0] == 'n' && p[1] == '='))
        p++;
    if (!*p)
        return 20000;
    for (p += 2; *p >= '0' && *p <= '9'; p++)
        n = n * 10 + (unsigned)(*p - '0');
    return n && n <= MAX_SAMPLES ? n : 20000;
}

static uint32_t rate_ns20;             /* ns per 2^20 TSC cycles */

static uint32_t to_ns(uint32_t cycles)
{
    return (uint32_t)(((uint64_t)cycles * rate_ns20) >> 20);
}

static void report(const char *what, uint32_t *v, unsigned n)
{
    sort(v, n);
    printk("bench: %s n=%u median_ns=%u p99_ns=%u\n", what, n, to_ns(v[n / 2]),
           to_ns(v[(n * 99) / 100]));
}

/* ---- #PF bounce round trip: touch an unmapped page, the hook skips ---- */
#define PF_VA 0x0dead000u

static bool pf_hook(struct cpu_regs *regs, unsigned long cr2)
{
    if (cr2 != PF_VA)
        return false;
    regs->eip += 6;                     /* movl %eax, PF_VA: a1-less form, 6 bytes */
    return true;
}

static void bench_pagefault(unsigned n)
{
    set_exception_hook(X86_EXC_PF, pf_hook);
    for (unsigned i = 0; i < n + 100; i++) {
        uint64_t a = tsc();
        __asm__ __volatile__(".byte 0x89, 0x05; .long %c0" :: "i"(PF_VA), "a"(0) : "memory");
        if (i >= 100)
            samples[i - 100] = (uint32_t)(tsc() - a);
    }
    report("pagefault-bounce", samples, n);
}

/* ---- upcall latency: send an event to ourselves, time to the handler ---- */
static volatile uint64_t upcall_tsc;

static void self_handler(evtchn_port_t port, void *data)
{
    (void)port; (void)data;
    upcall_tsc = tsc();
}

static void bench_upcall(unsigned n)
{
    struct { uint32_t vcpu, port; } b = { 0, 0 };
    if (hypercall_event_channel_op(7 /* EVTCHNOP_bind_ipi */, &b)) {
        printk("bench: upcall bind_ipi failed\n");
        return;
    }
    evtchn_set_handler(b.port, self_handler, NULL);
    evtchn_unmask(b.port);
    for (unsigned i = 0; i < n + 100; i++) {
        upcall_tsc = 0;
        uint64_t a = tsc();
        evtchn_send(b.port);
        while (!upcall_tsc)
            ;
        if (i >= 100)
            samples[i - 100] = (uint32_t)(upcall_tsc - a);
    }
    report("upcall-latency", samples, n);
}

/* ---- mmu_update: 512 entries of one L1 table, each rewritten as it is ---- */
static void bench_mmu_update(unsigned rounds)
{
    static struct mmu_update req[512];
    /* the L1 that maps 2-4 MiB: L3[0] -> L2[1] -> L1 (all in the 1:1 area) */
    const uint64_t *l3 = (const uint64_t *)start_info->pt_base;
    const uint64_t *l2 = pfn_to_virt(mfn_to_pfn((uint32_t)(l3[0] >> 12)));
    uint32_t l1_mfn = (uint32_t)(l2[1] >> 12);
    const uint64_t *l1 = pfn_to_virt(mfn_to_pfn(l1_mfn));
    unsigned n = 0;
    for (unsigned i = 0; i < 512; i++) {
        req[n].ptr = ((uint64_t)l1_mfn << 12) + i * 8;      /* MMU_NORMAL_PT_UPDATE */
        req[n].val = l1[i];
        n++;
    }
    for (unsigned r = 0; r < rounds; r++) {
        unsigned done = 0;
        uint64_t a = tsc();
        long rc = hypercall_mmu_update(req, n, &done, DOMID_SELF);
        samples[r] = (uint32_t)(tsc() - a);
        if (rc || done != n) {
            printk("bench: mmu_update failed: %ld (%u of %u)\n", rc, done, n);
            return;
        }
    }
    sort(samples, rounds);
    printk("bench: mmu-update-512 n=%u median_ns=%u per_entry_ns=%u\n", rounds,
           to_ns(samples[rounds / 2]), to_ns(samples[rounds / 2]) / n);
}

int main(void)
{
    unsigned n = parse_n((const char *)start_info->cmd_line);

    for (unsigned i = 0; i < 1000; i++)         /* warm up: translate, fault in */
        hypercall_xen_version(XENVER_version, NULL);

    uint64_t ns0 = system_time_ns(), c0 = tsc();
    for (unsigned i = 0; i < n; i++) {
        uint64_t a = tsc();
        hypercall_xen_version(XENVER_version, NULL);
        samples[i] = (uint32_t)(tsc() - a);
    }
    uint64_t ns1 = system_time_ns(), c1 = tsc();

    sort(samples, n);
    /* cycles -> ns with the rate measured over the whole run (ns per 2^20 cycles) */
    uint64_t rate = ((ns1 - ns0) << 20) / (c1 - c0);
    uint32_t med = (uint32_t)(((uint64_t)samples[n / 2] * rate) >> 20);
    uint32_t p99 = (uint32_t)(((uint64_t)samples[(n * 99) / 100] * rate) >> 20);
    uint32_t avg = (uint32_t)((ns1 - ns0) / n);
    uint32_t p90 = (uint32_t)(((uint64_t)samples[(n * 90) / 100] * rate) >> 20);
    uint32_t p95 = (uint32_t)(((uint64_t)samples[(n * 95) / 100] * rate) >> 20);
    uint32_t p999 = (uint32_t)(((uint64_t)samples[(n * 999) / 1000] * rate) >> 20);
    uint32_t max = (uint32_t)(((uint64_t)samples[n - 1] * rate) >> 20);
    printk("bench: tail p90_ns=%u p95_ns=%u p999_ns=%u max_ns=%u\n", p90, p95, p999, max);
    printk("bench: null-hypercall n=%u median_ns=%u p99_ns=%u mean_ns=%u\n", n, med, p99, avg);
    rate_ns20 = (uint32_t)rate;
    bench_pagefault(n / 4);
    bench_upcall(n / 4);
    bench_mmu_update(50);
    printk("bench: done\n");
    return 0;
}
