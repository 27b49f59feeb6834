/*
 * Xen's PV clock (xen.h, struct vcpu_time_info): Xen publishes
 * (tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift) under a
 * version counter that is odd while it is updating, and
 *   now = system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32
 * (shift right by -shift when shift is negative).
 */
#include "clock.h"
#include "console.h"
#include "events.h"
#include "hypercall.h"
#include "sched.h"

static evtchn_port_t timer_port;
static volatile unsigned long timer_count;

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ __volatile__ ("rdtsc" : "=a" (lo), "=d" (hi));
    return ((uint64_t)hi << 32) | lo;
}

/* (delta * mul) >> 32 without losing bits: a 64x32 -> 96-bit product. */
static uint64_t scale_delta(uint64_t delta, uint32_t mul, int8_t shift)
{
    uint64_t lo, hi;

    if (shift >= 0)
        delta <<= shift;
    else
        delta >>= -shift;

    lo = (uint64_t)(uint32_t)delta * mul;          /* bits 0..63  */
    hi = (uint64_t)(uint32_t)(delta >> 32) * mul;  /* bits 32..95 */
    return hi + (lo >> 32);
}

uint64_t system_time_ns(void)
{
    const volatile struct vcpu_time_info *t = &this_vcpu()->time;
    uint32_t version, mul;
    uint64_t stamp, base, tsc;
    int8_t shift;

    do {
        version = t->version;
        rmb();
        stamp = t->tsc_timestamp;
        base = t->system_time;
        mul = t->tsc_to_system_mul;
        shift = t->tsc_shift;
        tsc = rdtsc();
        rmb();
    } while ((version & 1) || version != t->version);

    /* A TSC behind the stamp (another pCPU's TSC) must not go negative. */
    if (tsc < stamp)
        return base;
    return base + scale_delta(tsc - stamp, mul, shift);
}

void wallclock(uint64_t *sec, uint32_t *nsec)
{
    const volatile struct shared_info *s = shared_info;
    uint32_t version, wc_sec, wc_sec_hi, wc_nsec;
    uint64_t ns;

    do {
        version = s->wc_version;
        rmb();
        wc_sec = s->wc_sec;
        wc_sec_hi = s->arch.wc_sec_hi;
        wc_nsec = s->wc_nsec;
        rmb();
    } while ((version & 1) || version != s->wc_version);

    /* The wall clock is the time at system time 0. */
    ns = wc_nsec + system_time_ns();
    *sec = (((uint64_t)wc_sec_hi << 32) | wc_sec) + ns / NSEC_PER_SEC;
    *nsec = ns % NSEC_PER_SEC;
}

static void timer_handler(evtchn_port_t port, void *data)
{
    (void)port;
    (void)data;
    timer_count++;
}

void clock_init(void)
{
    long rc = evtchn_bind_virq(VIRQ_TIMER, &timer_port);

    if (rc) {
        printk("clock: bind_virq(VIRQ_TIMER) failed: %ld\n", rc);
        xen_shutdown(SHUTDOWN_crash);
    }
    evtchn_set_handler(timer_port, timer_handler, NULL);
    evtchn_unmask(timer_port);
}

void sleep_until(uint64_t deadline_ns)
{
    unsigned long flags = local_irq_save();

    while (system_time_ns() < deadline_ns) {
        /* Re-arm each time: another event may have woken us early, and
         * Xen fires at once for a deadline already past. */
        hypercall_set_timer_op(deadline_ns);
        block();
        local_irq_disable();
    }
    local_irq_restore(flags);
}

void sleep_ms(unsigned int ms)
{
    sleep_until(system_time_ns() + ms * NSEC_PER_MSEC);
}

unsigned long timer_events(void)
{
    return timer_count;
}
