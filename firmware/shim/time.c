/*
 * Time: the local APIC (interrupts, one-shot timer) and the HPET (a
 * nanosecond reference).  System time is TSC-extrapolated from anchors
 * taken against the HPET, published to the guest in Xen's vcpu_time_info.
 */
#include "shim.h"

#define LAPIC_BASE      0xfee00000u
#define LAPIC_ID        0x020
#define LAPIC_EOI       0x0b0
#define LAPIC_SVR       0x0f0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TMICT     0x380
#define LAPIC_TMCCT     0x390
#define LAPIC_TDCR      0x3e0
#define LVT_MASKED      (1u << 16)

#define HPET_BASE       0xfed00000u
#define HPET_CAP        0x000
#define HPET_CFG        0x010
#define HPET_COUNTER    0x0f0

static inline void lapic_write(uint32_t reg, uint32_t v) { mmio_write32(LAPIC_BASE + reg, v); }
static inline uint32_t lapic_read(uint32_t reg) { return mmio_read32(LAPIC_BASE + reg); }

void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
uint32_t lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }

void lapic_init(void)
{
    lapic_write(LAPIC_SVR, 0x100 | SHIM_VEC_SPURIOUS);
    lapic_write(LAPIC_TDCR, 0xb);                       /* divide by 1 */
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | SHIM_VEC_TIMER);
    lapic_write(LAPIC_TMICT, 0);
}

static uint32_t hpet_period_fs;

static uint64_t hpet_ns(void)
{
    uint32_t hi, lo, hi2;
    do {
        hi = mmio_read32(HPET_BASE + HPET_COUNTER + 4);
        lo = mmio_read32(HPET_BASE + HPET_COUNTER);
        hi2 = mmio_read32(HPET_BASE + HPET_COUNTER + 4);
    } while (hi != hi2);
    uint64_t ticks = ((uint64_t)hi << 32) | lo;
    /* period is 10 ns (1e7 fs) on QEMU; keep the general form exact */
    return ticks * (hpet_period_fs / 1000000u);
}

/* ---- TSC scale, as Xen's set_time_scale(): ns = ((tsc << shift) * mul) >> 32 */
static uint64_t anchor_tsc, anchor_ns, next_refresh_ns, refresh_step_ns;
static uint32_t scale_mul;
static int32_t scale_shift;

/* Publish the anchor for Python (a seqlock: odd while changing). */
static void publish_anchor(void)
{
    shim_boot.time_version++;
    barrier();
    shim_boot.anchor_tsc = anchor_tsc;
    shim_boot.anchor_ns = anchor_ns;
    shim_boot.tsc_mul = scale_mul;
    shim_boot.tsc_shift = scale_shift;
    barrier();
    shim_boot.time_version++;
}

static void set_time_scale(uint64_t ticks_per_sec)
{
    int32_t shift = 0;
    uint64_t tps64 = ticks_per_sec;
    while (tps64 > 2000000000ull) {
        tps64 >>= 1;
        shift--;
    }
    uint32_t tps32 = (uint32_t)tps64;
    while (tps32 <= 1000000000u) {
        tps32 <<= 1;
        shift++;
    }
    scale_mul = (uint32_t)((1000000000ull << 32) / tps32);
    scale_shift = shift;
}

static uint64_t scale_delta(uint64_t delta)
{
    if (scale_shift < 0)
        delta >>= -scale_shift;
    else
        delta <<= scale_shift;
    uint64_t lo = (uint64_t)(uint32_t)delta * scale_mul;
    uint64_t hi = (delta >> 32) * scale_mul;
    return hi + (lo >> 32);
}

uint64_t shim_now(void)
{
    return anchor_ns + scale_delta(rdtsc() - anchor_tsc);
}

/* Count TSC and APIC timer ticks over `ns` of HPET time.  An HPET read is
 * slow (an MMIO exit), so each is bracketed with TSC reads; the caller runs
 * this twice because the first pass pays for translating the code (TCG). */
static void calibrate(uint64_t span, uint64_t *ns, uint64_t *tsc, uint32_t *apic,
                      uint64_t *t_end, uint64_t *h_end)
{
    lapic_write(LAPIC_TMICT, 0xffffffffu);
    uint64_t a = rdtsc();
    uint64_t h0 = hpet_ns();
    uint32_t l0 = lapic_read(LAPIC_TMCCT);
    uint64_t b = rdtsc();
    uint64_t t0 = a + (b - a) / 2, h1;
    uint32_t l1;
    do {
        a = rdtsc();
        h1 = hpet_ns();
        l1 = lapic_read(LAPIC_TMCCT);
        b = rdtsc();
    } while (h1 - h0 < span);
    lapic_write(LAPIC_TMICT, 0);
    *ns = h1 - h0;
    *tsc = a + (b - a) / 2 - t0;
    *apic = l0 - l1;
    *t_end = a + (b - a) / 2;
    *h_end = h1;
}

void time_init(void)
{
    uint32_t cap_hi = mmio_read32(HPET_BASE + HPET_CAP + 4);
    hpet_period_fs = cap_hi ? cap_hi : 10000000u;
    mmio_write32(HPET_BASE + HPET_CFG, mmio_read32(HPET_BASE + HPET_CFG) | 1);

    uint64_t ns, dtsc, t1, h1;
    uint32_t dapic;
    calibrate(100000, &ns, &dtsc, &dapic, &t1, &h1);
    calibrate(2000000, &ns, &dtsc, &dapic, &t1, &h1);

    uint64_t tsc_hz = dtsc * 1000000000ull / ns;
    shim_boot.tsc_khz = (uint32_t)(tsc_hz / 1000);
    shim_boot.lapic_khz = (uint32_t)((uint64_t)dapic * 1000000ull / ns);
    if (!shim_boot.lapic_khz)
        shim_boot.lapic_khz = 1000000;
    set_time_scale(tsc_hz);
    anchor_tsc = t1;
    anchor_ns = h1;
    shim_boot.boot_tsc = t1;
    shim_boot.boot_ns = h1;
    publish_anchor();
    refresh_step_ns = 10000000ull;                  /* 10 ms, then x10 */
    next_refresh_ns = h1 + refresh_step_ns;
}

/* Re-anchor to the HPET and refine the TSC rate over the whole baseline.
 * Time never goes backwards: the new anchor is at least the old estimate. */
static void time_refresh(void)
{
    uint64_t tsc = rdtsc();
    uint64_t est = anchor_ns + scale_delta(tsc - anchor_tsc);
    uint64_t h = hpet_ns();
    uint64_t base = h - shim_boot.boot_ns;
    if (base > 0)
        set_time_scale((tsc - shim_boot.boot_tsc) * 1000000000ull / base);
    anchor_tsc = tsc;
    anchor_ns = h > est ? h : est;
    if (refresh_step_ns < 1000000000ull)
        refresh_step_ns *= 10;
    next_refresh_ns = anchor_ns + refresh_step_ns;
    publish_anchor();
}

/* Publish the current anchor in the guest's vcpu_info.time (Xen's version
 * protocol: odd while an update is in progress). */
void time_update_vcpu(struct shim_vcpu *v)
{
    if (!v->vcpu_info_pa)
        return;
    volatile uint8_t *ti = (volatile uint8_t *)(v->vcpu_info_pa + 32);
    volatile uint32_t *version = (volatile uint32_t *)ti;
    *version = *version + 1;
    barrier();
    *(volatile uint64_t *)(ti + 8) = anchor_tsc;
    *(volatile uint64_t *)(ti + 16) = anchor_ns;
    *(volatile uint32_t *)(ti + 24) = scale_mul;
    *(volatile int8_t *)(ti + 28) = (int8_t)scale_shift;
    *(volatile uint8_t *)(ti + 29) = 0;
    barrier();
    *version = *version + 1;
}

static uint64_t next_deadline(struct shim_vcpu *v)
{
    uint64_t d = next_refresh_ns;
    if (v->timer_deadline && v->timer_deadline < d)
        d = v->timer_deadline;
    if (v->wake_deadline && v->wake_deadline < d)
        d = v->wake_deadline;
    if (v->periodic_ns && v->virq_timer_port && v->periodic_next < d)
        d = v->periodic_next;
    return d;
}

/* Program the one-shot APIC timer for the earliest thing this vCPU waits for. */
void timer_arm(struct shim_vcpu *v)
{
    uint64_t now = shim_now(), d = next_deadline(v);
    uint64_t delta = d > now ? d - now : 0;
    uint64_t count = delta * shim_boot.lapic_khz / 1000000u;
    if (count == 0)
        count = 1;
    if (count > 0xffffffffull)
        count = 0xffffffffull;
    lapic_write(LAPIC_LVT_TIMER, SHIM_VEC_TIMER);
    lapic_write(LAPIC_TMICT, (uint32_t)count);
}

/* The APIC timer fired: expire what is due, publish time, re-arm. */
void timer_irq(struct shim_vcpu *v)
{
    v->stat_timer_irqs++;
    uint64_t now = shim_now();
    int changed = 0;
    if (now >= next_refresh_ns) {
        time_refresh();
        now = shim_now();
        changed = 1;
    }
    if (v->timer_deadline && now >= v->timer_deadline) {
        v->timer_deadline = 0;
        if (v->virq_timer_port)
            evtchn_set_pending(v, v->virq_timer_port - 1);
        changed = 1;
    }
    if (v->periodic_ns && v->virq_timer_port && now >= v->periodic_next) {
        v->periodic_next = now + v->periodic_ns;
        evtchn_set_pending(v, v->virq_timer_port - 1);
        changed = 1;
    }
    if (changed)
        time_update_vcpu(v);
    timer_arm(v);
}
