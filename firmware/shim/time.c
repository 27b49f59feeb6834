/*
 * Time: the local APIC (interrupts, one-shot timer) and the HPET (a
 * nanosecond reference).  System time is TSC-extrapolated from anchors
 * taken against the HPET, published to the guest in Xen's vcpu_time_info.
 */
#include "shim.h"
#include "timemath.h"

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

/* INIT, then SIPI twice, to the vCPU with this APIC id. */
void lapic_start_ap(uint32_t apic_id)
{
    static const uint32_t cmds[3] = { 0x4500, 0x4600 | (SHIM_AP_TRAMPOLINE >> 12),
                                      0x4600 | (SHIM_AP_TRAMPOLINE >> 12) };
    for (int i = 0; i < 3; i++) {
        lapic_write(0x310, apic_id << 24);
        lapic_write(0x300, cmds[i]);
        while (lapic_read(0x300) & (1u << 12))     /* delivery pending */
            cpu_relax();
    }
}
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

/* ---- TSC scale, as Xen's set_time_scale(): ns = ((tsc << shift) * mul) >> 32
 * The anchor lives in shim_boot (Python reads it too) behind a seqlock:
 * only vCPU 0 writes it, every vCPU reads it. */
static uint64_t next_refresh_ns, refresh_step_ns;

struct anchor { uint64_t tsc, ns; uint32_t mul; int32_t shift; };

static void read_anchor(struct anchor *a)
{
    uint32_t v;
    do {
        while ((v = shim_boot.time_version) & 1)
            cpu_relax();
        barrier();
        a->tsc = shim_boot.anchor_tsc;
        a->ns = shim_boot.anchor_ns;
        a->mul = shim_boot.tsc_mul;
        a->shift = shim_boot.tsc_shift;
        barrier();
    } while (shim_boot.time_version != v);
}

static void publish_anchor(uint64_t tsc, uint64_t ns, uint32_t mul, int32_t shift)
{
    shim_boot.time_version++;
    mb();
    shim_boot.anchor_tsc = tsc;
    shim_boot.anchor_ns = ns;
    shim_boot.tsc_mul = mul;
    shim_boot.tsc_shift = shift;
    mb();
    shim_boot.time_version++;
}

uint64_t shim_now(void)
{
    struct anchor a;
    read_anchor(&a);
    return a.ns + scale_delta(rdtsc() - a.tsc, a.mul, a.shift);
}

/* One HPET reading (and the APIC timer's count) at a TSC time: each read is
 * bracketed with TSC reads and the narrowest of a few brackets is kept, so a
 * read during which the host descheduled the vCPU thread (milliseconds on a
 * busy 2-CPU host, where it made the TSC rate 40% low) is not used. */
#define STAMP_TRIES     5
struct stamp {
    uint64_t tsc, ns;
    uint32_t apic;
};

static void take_stamp(struct stamp *s)
{
    uint64_t best = ~0ull;
    for (int i = 0; i < STAMP_TRIES; i++) {
        uint64_t a = rdtsc();
        uint64_t h = hpet_ns();
        uint32_t l = lapic_read(LAPIC_TMCCT);
        uint64_t b = rdtsc();
        if (b - a < best) {
            best = b - a;
            s->tsc = a + (b - a) / 2;
            s->ns = h;
            s->apic = l;
        }
    }
}

/* Count TSC and APIC timer ticks over `span` ns of HPET time; the caller
 * runs this twice because the first pass pays for translating the code
 * (TCG). */
static void calibrate(uint64_t span, uint64_t *ns, uint64_t *tsc, uint32_t *apic,
                      uint64_t *t_end, uint64_t *h_end)
{
    struct stamp s0, s1;
    lapic_write(LAPIC_TMICT, 0xffffffffu);
    take_stamp(&s0);
    while (hpet_ns() - s0.ns < span)
        cpu_relax();
    take_stamp(&s1);
    lapic_write(LAPIC_TMICT, 0);
    *ns = s1.ns - s0.ns;
    *tsc = s1.tsc - s0.tsc;
    *apic = s0.apic - s1.apic;
    *t_end = s1.tsc;
    *h_end = s1.ns;
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

    uint64_t tsc_hz = tsc_rate(dtsc, ns);
    shim_boot.tsc_khz = (uint32_t)(tsc_hz / 1000);
    shim_boot.lapic_khz = (uint32_t)((uint64_t)dapic * 1000000ull / ns);
    if (!shim_boot.lapic_khz)
        shim_boot.lapic_khz = 1000000;
    uint32_t mul;
    int32_t shift;
    time_scale(tsc_hz, &mul, &shift);
    shim_boot.boot_tsc = t1;
    shim_boot.boot_ns = h1;
    publish_anchor(t1, h1, mul, shift);
    refresh_step_ns = 10000000ull;                  /* 10 ms, then x10 */
    next_refresh_ns = h1 + refresh_step_ns;
}

/* Re-anchor to the HPET and refine the TSC rate over the whole baseline
 * (vCPU 0 only).  Time never goes backwards: the new anchor is at least
 * the old estimate. */
static void time_refresh(void)
{
    struct anchor a;
    struct stamp st;
    read_anchor(&a);
    take_stamp(&st);
    uint64_t tsc = st.tsc, h = st.ns;
    uint64_t est = a.ns + scale_delta(tsc - a.tsc, a.mul, a.shift);
    uint64_t base = h - shim_boot.boot_ns;
    uint32_t mul = a.mul;
    int32_t shift = a.shift;
    uint64_t rate = tsc_rate(tsc - shim_boot.boot_tsc, base);
    if (rate)           /* (a plain ticks * 1e9 / ns overflowed after 9 s: time ran 6-13x fast) */
        time_scale(rate, &mul, &shift);
    uint64_t ns = h > est ? h : est;
    if (refresh_step_ns < 1000000000ull)
        refresh_step_ns *= 10;
    next_refresh_ns = ns + refresh_step_ns;
    publish_anchor(tsc, ns, mul, shift);
}

/* Publish the current anchor in the guest's vcpu_info.time (Xen's version
 * protocol: odd while an update is in progress). */
void time_update_vcpu(struct shim_vcpu *v)
{
    if (!v->vcpu_info_pa)
        return;
    struct anchor a;
    read_anchor(&a);
    volatile uint8_t *ti = (volatile uint8_t *)(v->vcpu_info_pa + 32);
    volatile uint32_t *version = (volatile uint32_t *)ti;
    *version = *version + 1;
    barrier();
    *(volatile uint64_t *)(ti + 8) = a.tsc;
    *(volatile uint64_t *)(ti + 16) = a.ns;
    *(volatile uint32_t *)(ti + 24) = a.mul;
    *(volatile int8_t *)(ti + 28) = (int8_t)a.shift;
    *(volatile uint8_t *)(ti + 29) = 0;
    barrier();
    *version = *version + 1;
}

static uint64_t next_deadline(struct shim_vcpu *v)
{
    uint64_t d = v->vcpu_id == 0 ? next_refresh_ns : ~0ull;
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
    if (d == ~0ull) {                       /* nothing to wait for */
        lapic_write(LAPIC_TMICT, 0);
        return;
    }
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
    if (v->vcpu_id == 0 && now >= next_refresh_ns) {
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
