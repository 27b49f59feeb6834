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
    return 0;
}
