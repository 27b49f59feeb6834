/*
 * Events and time at the vCPU: the upcall and evtchn_upcall_mask
 * (masked in the callback, re-delivered on unmask and on iret),
 * EVTCHNOP_unmask, SCHEDOP_block and SCHEDOP_poll, VIRQ_TIMER from the
 * periodic timer, set_timer_op and the VCPUOP timers, and the
 * vcpu_time_info / wallclock version protocol.
 */
#include "abitest.h"

extern char hypervisor_callback[];      /* the library's event callback */

/* ---- port masks ---------------------------------------------------------- */
void mask_all_ports(uint32_t saved[NR_EVTCHN_WORDS])
{
    unsigned int i;

    for (i = 0; i < NR_EVTCHN_WORDS; i++)
        saved[i] = xchg32(&shared_info->evtchn_mask[i], 0xffffffff);
}

void restore_ports(const uint32_t saved[NR_EVTCHN_WORDS])
{
    struct vcpu_info *v = this_vcpu();
    unsigned int i;
    bool any = false;

    for (i = 0; i < NR_EVTCHN_WORDS; i++) {
        WRITE_ONCE(shared_info->evtchn_mask[i], saved[i]);
        mb();
        if (READ_ONCE(shared_info->evtchn_pending[i]) & ~saved[i]) {
            atomic_set_bit(i, &v->evtchn_pending_sel);
            any = true;
        }
    }
    if (any) {
        WRITE_ONCE(v->evtchn_upcall_pending, 1);
        if (!irqs_disabled())
            force_evtchn_callback();
    }
}

/* ---- our own event callback ------------------------------------------------ */
static struct {
    evtchn_port_t port;         /* the port under test */
    volatile unsigned int entries, deliveries, depth, nested, resend;
    volatile unsigned int mask_bad;     /* entries that saw the mask clear */
    volatile uint32_t leftover_sel;     /* other ports' words, for the library */
} ev;

void abt_evt_c(void);
void abt_evt_c(void)
{
    struct vcpu_info *v = this_vcpu();
    uint32_t sel;

    ev.entries++;
    if (ev.depth++)
        ev.nested++;
    if (!READ_ONCE(v->evtchn_upcall_mask))
        ev.mask_bad++;
    WRITE_ONCE(v->evtchn_upcall_pending, 0);
    sel = xchg32(&v->evtchn_pending_sel, 0);
    while (sel) {
        unsigned int w = lowest_bit(sel);
        uint32_t pend;

        sel &= sel - 1;
        pend = READ_ONCE(shared_info->evtchn_pending[w]) & ~READ_ONCE(shared_info->evtchn_mask[w]);
        if (w == ev.port / 32 && (pend & (1U << (ev.port % 32)))) {
            atomic_clear_bit(ev.port % 32, &shared_info->evtchn_pending[w]);
            ev.deliveries++;
            pend &= ~(1U << (ev.port % 32));
            if (ev.resend) {
                ev.resend--;
                evtchn_send(ev.port);   /* masked here: must come on iret */
            }
        }
        if (pend)
            ev.leftover_sel |= 1U << w;
    }
    ev.depth--;
}

static long register_event_callback(void *entry)
{
    struct callback_register cb = {
        .type = CALLBACKTYPE_event, .flags = 0,
        .cs = FLAT_KERNEL_CS, .eip = (uint32_t)entry,
    };

    return hypercall_callback_op(CALLBACKOP_register, &cb);
}

static void restore_library_callback(void)
{
    struct vcpu_info *v = this_vcpu();

    local_irq_disable();
    register_event_callback(hypervisor_callback);
    if (ev.leftover_sel) {
        __asm__ __volatile__ ("lock; orl %1, %0" : "+m" (v->evtchn_pending_sel)
                              : "r" (ev.leftover_sel) : "memory");
        WRITE_ONCE(v->evtchn_upcall_pending, 1);
        ev.leftover_sel = 0;
    }
    local_irq_enable();
}

static long bind_ipi(evtchn_port_t *port)
{
    struct evtchn_bind_ipi b = { .vcpu = 0 };
    long rc = hypercall_event_channel_op(EVTCHNOP_bind_ipi, &b);

    *port = b.port;
    return rc;
}

static void close_port(evtchn_port_t port)
{
    struct evtchn_port_op c = { .port = port };

    hypercall_event_channel_op(EVTCHNOP_close, &c);
}

static void check_upcall(void)
{
    struct vcpu_info *v = this_vcpu();
    unsigned int after;
    long rc;

    rc = bind_ipi(&ev.port);
    if (rc) {
        check("event-upcall-mask", false, "EVTCHNOP_bind_ipi = %ld", rc);
        return;
    }
    ev.entries = ev.deliveries = ev.nested = ev.mask_bad = 0;
    ev.leftover_sel = 0;
    local_irq_disable();
    rc = register_event_callback(abt_evt_entry);
    if (rc)
        why("callback_op(register event) = %ld", rc);

    /* Masked: the send only marks the event pending. */
    evtchn_send(ev.port);
    if (ev.deliveries)
        why("an upcall was delivered while evtchn_upcall_mask was set");
    if (!READ_ONCE(v->evtchn_upcall_pending))
        why("evtchn_upcall_pending not set by a send while masked");
    /* Unmask: the next exit to the guest delivers it. */
    WRITE_ONCE(v->evtchn_upcall_mask, 0);
    mb();
    hypercall_xen_version(XENVER_version, NULL);
    if (ev.deliveries != 1)
        why("after unmasking and a hypercall: %u deliveries, expected 1", ev.deliveries);

    /* Unmasked send: delivered on the way back from the send itself.  The
     * callback sends again (masked): that one must come on its iret. */
    ev.deliveries = 0;
    ev.resend = 1;
    evtchn_send(ev.port);
    after = ev.deliveries;
    if (after != 2)
        why("send with events on, the callback resending: %u deliveries when the send "
            "returned, expected 2 (the 2nd on the callback's iret)", after);
    if (ev.nested)
        why("%u nested upcalls (the callback runs with events masked)", ev.nested);
    if (ev.mask_bad)
        why("%u upcalls ran with evtchn_upcall_mask clear", ev.mask_bad);
    check_why("event-upcall-mask");

    /* Unmasking the port through Xen delivers what is pending on it. */
    ev.deliveries = 0;
    evtchn_mask(ev.port);
    evtchn_send(ev.port);
    if (ev.deliveries)
        why("a send on a masked port delivered an upcall");
    if (!(READ_ONCE(shared_info->evtchn_pending[ev.port / 32]) & (1U << (ev.port % 32))))
        why("a send on a masked port did not set its pending bit");
    {
        struct evtchn_port_op u = { .port = ev.port };

        rc = hypercall_event_channel_op(EVTCHNOP_unmask, &u);
        if (rc)
            why("EVTCHNOP_unmask = %ld", rc);
    }
    if (ev.deliveries != 1)
        why("EVTCHNOP_unmask of a pending port: %u deliveries on return, expected 1",
            ev.deliveries);
    check_why("evtchn-unmask-redeliver");

    /* SCHEDOP_block with an event pending returns at once, unmasked. */
    {
        uint64_t t0;

        ev.deliveries = 0;
        local_irq_disable();
        evtchn_send(ev.port);
        hypercall_set_timer_op(system_time_ns() + 500 * NSEC_PER_MSEC);   /* backstop */
        t0 = system_time_ns();
        block();
        if (system_time_ns() - t0 > 100 * NSEC_PER_MSEC)
            why("SCHEDOP_block with an event pending slept %llu ms",
                (unsigned long long)((system_time_ns() - t0) / NSEC_PER_MSEC));
        if (irqs_disabled())
            why("SCHEDOP_block left events masked");
        if (ev.deliveries != 1)
            why("SCHEDOP_block: %u deliveries, expected 1", ev.deliveries);
        hypercall_set_timer_op(0);
        check_why("sched-block-pending");
    }

    /* SCHEDOP_poll: a pending port returns at once; else the timeout. */
    {
        uint32_t saved[NR_EVTCHN_WORDS];
        evtchn_port_t ports[1] = { ev.port };
        struct sched_poll p = { .ports = (uint32_t)ports, .nr_ports = 1 };
        uint64_t t0, dt;

        local_irq_disable();
        mask_all_ports(saved);
        atomic_clear_bit(ev.port % 32, &shared_info->evtchn_pending[ev.port / 32]);
        t0 = system_time_ns();
        p.timeout = t0 + 20 * NSEC_PER_MSEC;
        rc = hypercall_sched_op(SCHEDOP_poll, &p);
        dt = system_time_ns() - t0;
        if (rc || dt < 19 * NSEC_PER_MSEC || dt > 1000 * NSEC_PER_MSEC)
            why("poll(idle port, all ports masked, timeout 20 ms) = %ld after %llu us "
                "(port pending %u, upcall_pending %u)", rc, (unsigned long long)(dt / 1000),
                !!(shared_info->evtchn_pending[ev.port / 32] & (1U << (ev.port % 32))),
                this_vcpu()->evtchn_upcall_pending);
        t0 = system_time_ns();
        p.timeout = t0 + 200 * NSEC_PER_MSEC;
        rc = hypercall_sched_op(SCHEDOP_poll, &p);
        dt = system_time_ns() - t0;
        if (rc || dt < 199 * NSEC_PER_MSEC || dt > 2000 * NSEC_PER_MSEC)
            why("poll(idle port, timeout 200 ms) = %ld after %llu us", rc,
                (unsigned long long)(dt / 1000));
        evtchn_send(ev.port);
        t0 = system_time_ns();
        p.timeout = t0 + 1000 * NSEC_PER_MSEC;
        rc = hypercall_sched_op(SCHEDOP_poll, &p);
        dt = system_time_ns() - t0;
        if (rc || dt > 100 * NSEC_PER_MSEC)
            why("poll(pending port) = %ld after %llu us", rc, (unsigned long long)(dt / 1000));
        p.nr_ports = 129;
        rc = hypercall_sched_op(SCHEDOP_poll, &p);
        if (rc != -XEN_EINVAL)
            why("poll(129 ports) = %ld, Xen gives -EINVAL", rc);
        ports[0] = NR_EVENT_CHANNELS + 5;
        p.nr_ports = 1;
        p.timeout = 0;
        rc = hypercall_sched_op(SCHEDOP_poll, &p);
        if (rc != -XEN_EINVAL)
            why("poll(port %u) = %ld, Xen gives -EINVAL", ports[0], rc);
        atomic_clear_bit(ev.port % 32, &shared_info->evtchn_pending[ev.port / 32]);
        restore_ports(saved);
        local_irq_enable();
        check_why("sched-poll");
    }

    restore_library_callback();
    close_port(ev.port);
}

/* ---- timers ---------------------------------------------------------------- */
/* Busy-wait (no block) for `ms`, counting VIRQ_TIMER events and when the first came. */
static unsigned long count_ticks(unsigned int ms, uint64_t *first)
{
    uint64_t end = system_time_ns() + (uint64_t)ms * NSEC_PER_MSEC;
    unsigned long start = timer_events(), last = start;

    *first = 0;
    while (system_time_ns() < end) {
        unsigned long now = timer_events();

        if (now != last && !*first)
            *first = system_time_ns();
        last = now;
        hypercall_sched_op(SCHEDOP_yield, NULL);
    }
    return timer_events() - start;
}

static void check_timers(void)
{
    struct vcpu_set_periodic_timer per = { .period_ns = 20 * NSEC_PER_MSEC };
    struct vcpu_set_singleshot_timer ss;
    uint64_t first, deadline;
    unsigned long n;
    long rc;

    hypercall_set_timer_op(0);
    n = count_ticks(100, &first);
    if (n < 5 || n > 20)
        why("default periodic timer: %lu VIRQ_TIMER in 100 ms, Xen's PV default is 100 Hz", n);
    rc = hypercall_vcpu_op(VCPUOP_set_periodic_timer, 0, &per);
    if (rc)
        why("VCPUOP_set_periodic_timer(20 ms) = %ld", rc);
    n = count_ticks(200, &first);
    if (n < 5 || n > 15)
        why("periodic 20 ms: %lu VIRQ_TIMER in 200 ms", n);
    per.period_ns = 100000;
    rc = hypercall_vcpu_op(VCPUOP_set_periodic_timer, 0, &per);
    if (rc != -XEN_EINVAL)
        why("VCPUOP_set_periodic_timer(100 us) = %ld, Xen gives -EINVAL", rc);
    rc = hypercall_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);
    if (rc)
        why("VCPUOP_stop_periodic_timer = %ld", rc);
    n = count_ticks(60, &first);
    if (n > 1)
        why("stopped periodic timer: %lu VIRQ_TIMER in 60 ms", n);
    check_why("timer-periodic");

    /* set_timer_op: one event, not before the deadline; 0 cancels. */
    deadline = system_time_ns() + 20 * NSEC_PER_MSEC;
    rc = hypercall_set_timer_op(deadline);
    n = count_ticks(60, &first);
    if (rc || n != 1 || first < deadline)
        why("set_timer_op(+20 ms) = %ld: %lu events, first at %lld us from the deadline", rc, n,
            (long long)(first - deadline) / 1000);
    hypercall_set_timer_op(system_time_ns() + 20 * NSEC_PER_MSEC);
    hypercall_set_timer_op(0);
    n = count_ticks(60, &first);
    if (n)
        why("set_timer_op(0) did not cancel: %lu events", n);
    /* Xen runs an expired timer's softirq on the way back to the guest, so
     * the event may already have come when the hypercall returns. */
    {
        unsigned long before = timer_events();

        deadline = system_time_ns() - NSEC_PER_MSEC;
        hypercall_set_timer_op(deadline);
        count_ticks(100, &first);
        n = timer_events() - before;
        if (n && !first)
            first = deadline;                   /* it came before the count began */
    }
    if (n != 1 || first - deadline > 20 * NSEC_PER_MSEC)
        why("set_timer_op(1 ms in the past): %lu events in 100 ms, the first %lld us after "
            "the deadline; Xen fires at once", n,
            first ? (long long)(first - deadline) / 1000 : -1LL);
    check_why("timer-set-timer-op");

    /* VCPUOP singleshot */
    ss.timeout_abs_ns = deadline = system_time_ns() + 20 * NSEC_PER_MSEC;
    ss.flags = 0;
    rc = hypercall_vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss);
    n = count_ticks(60, &first);
    if (rc || n != 1 || first < deadline)
        why("VCPUOP_set_singleshot_timer(+20 ms) = %ld: %lu events, first at %lld us", rc, n,
            (long long)(first - deadline) / 1000);
    ss.timeout_abs_ns = system_time_ns() + 20 * NSEC_PER_MSEC;
    hypercall_vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss);
    rc = hypercall_vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL);
    n = count_ticks(60, &first);
    if (rc || n)
        why("VCPUOP_stop_singleshot_timer = %ld: %lu events after it", rc, n);
    /* In the past: fires at once (Xen >= 4.18), or -ETIME with the future flag. */
    ss.timeout_abs_ns = system_time_ns() - NSEC_PER_MSEC;
    ss.flags = VCPU_SSHOTTMR_future;
    rc = hypercall_vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss);
    n = count_ticks(20, &first);
    if (!((rc == -XEN_ETIME && n == 0) || (rc == 0 && n == 1)))
        why("singleshot in the past with VCPU_SSHOTTMR_future = %ld, %lu events", rc, n);
    rc = hypercall_vcpu_op(VCPUOP_set_singleshot_timer, 1, &ss);
    if (rc != -XEN_ENOENT && rc != -XEN_EINVAL)
        why("VCPUOP_set_singleshot_timer(vcpu 1 of 1) = %ld", rc);
    check_why("timer-vcpuop-singleshot");

    /* SCHEDOP_block wakes on the timer event, with events unmasked. */
    {
        unsigned long before = timer_events();

        uint64_t woke = 0, giveup;
        unsigned int blocks = 0;

        /* Xen may wake a blocked vCPU for any event: block until the timer's. */
        deadline = system_time_ns() + 10 * NSEC_PER_MSEC;
        giveup = deadline + 1000 * NSEC_PER_MSEC;
        hypercall_set_timer_op(deadline);
        while (timer_events() == before && system_time_ns() < giveup) {
            local_irq_disable();
            if (timer_events() != before)
                break;
            block();
            blocks++;
            if (irqs_disabled())
                why("SCHEDOP_block returned with events masked");
        }
        woke = system_time_ns();
        local_irq_enable();
        if (timer_events() == before)
            why("no timer event in 1 s of SCHEDOP_block (%u blocks)", blocks);
        else if (woke < deadline)
            why("the timer event came %llu us before the deadline",
                (unsigned long long)(deadline - woke) / 1000);
        check_why("sched-block-timer");
    }

    /* SCHEDOP_block inside a multicall: the vCPU sleeps there, and the
     * entry after it runs once the vCPU is woken (Xen preempts the
     * multicall and continues it).  Any event may wake it: block until
     * the timer's, as above. */
    {
        unsigned long before = timer_events();
        static struct multicall_entry mc[2];
        long version = hypercall_xen_version(XENVER_version, NULL);
        uint64_t giveup, woke;
        unsigned int rounds = 0;

        deadline = system_time_ns() + 10 * NSEC_PER_MSEC;
        giveup = deadline + 1000 * NSEC_PER_MSEC;
        hypercall_set_timer_op(deadline);
        while (timer_events() == before && system_time_ns() < giveup) {
            mc[0] = (struct multicall_entry){ .op = __HYPERVISOR_sched_op, .result = 0x5a5a5a5a,
                                              .args = { SCHEDOP_block, 0 } };
            mc[1] = (struct multicall_entry){ .op = __HYPERVISOR_xen_version,
                                              .result = 0x5a5a5a5a, .args = { XENVER_version } };
            local_irq_disable();
            if (timer_events() != before)
                break;
            long rc = hypercall_multicall(mc, 2);
            rounds++;
            if (irqs_disabled())
                why("multicall(SCHEDOP_block) returned with events masked");
            local_irq_enable();
            if (rc != 0 || mc[0].result != 0 || mc[1].result != version)
                why("multicall(block, xen_version) = %ld: results %d, %#x (xen_version %#lx)",
                    rc, mc[0].result, mc[1].result, version);
        }
        woke = system_time_ns();
        local_irq_enable();
        if (!rounds || timer_events() == before)
            why("multicall(SCHEDOP_block): %u rounds, no timer event in 1 s", rounds);
        else if (woke < deadline)
            why("multicall(SCHEDOP_block): woke %llu us before the timer's deadline",
                (unsigned long long)(deadline - woke) / 1000);
        check_why("sched-block-multicall");
    }

    /* Back to Xen's default 10 ms tick. */
    per.period_ns = 10 * NSEC_PER_MSEC;
    hypercall_vcpu_op(VCPUOP_set_periodic_timer, 0, &per);
}

static void check_time(void)
{
    const volatile struct vcpu_time_info *t = &this_vcpu()->time;
    const volatile struct shared_info *s = shared_info;
    uint64_t prev = 0, now, t0;
    uint64_t sec;
    uint32_t nsec, ver;
    unsigned int i, odd = 0;

    for (i = 0; i < 2000; i++) {
        ver = t->version;
        if (ver & 1)
            odd++;
        now = system_time_ns();
        if (now < prev)
            why("system time went back: %llu after %llu", (unsigned long long)now,
                (unsigned long long)prev);
        prev = now;
    }
    if (odd > 100)
        why("vcpu_time_info.version odd in %u of 2000 reads", odd);
    if (!t->tsc_to_system_mul)
        why("vcpu_time_info.tsc_to_system_mul is 0");
    t0 = system_time_ns();
    sleep_ms(20);
    now = system_time_ns();
    if (now - t0 < 20 * NSEC_PER_MSEC || now - t0 > 2000 * NSEC_PER_MSEC)
        why("sleep_ms(20) took %llu us of system time", (unsigned long long)(now - t0) / 1000);
    check_why("time-vcpu-time-info");

    if (s->wc_version & 1)
        why("wc_version %u is odd", s->wc_version);
    wallclock(&sec, &nsec);
    if (sec < 1577836800ULL || nsec >= 1000000000U)      /* 2020-01-01 */
        why("wall clock %llu.%09u", (unsigned long long)sec, nsec);
    check_why("time-wallclock");
}

/* ---- VCPUOP_register_vcpu_info ----------------------------------------------
 * vcpu_info moves into a page of ours (map_vcpu_info): the old contents come
 * along, everything is marked pending, a second registration is refused;
 * afterwards events, the upcall mask in exception frames (the shim's own
 * fast paths read it there) and the timer use the new place.  Runs last:
 * the library follows the move through vcpu_info_ptr. */
static uint8_t vinfo_page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static void t_pf_unmapped(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: movl 0x0DEAD000, %%eax" ::: "eax", "memory");
}

static void check_register_vcpu_info(void)
{
    struct vcpu_register_vcpu_info r = {
        .mfn = virt_to_mfn(vinfo_page), .offset = PAGE_SIZE - sizeof(struct vcpu_info) + 1,
    };
    struct vcpu_info *nv = (struct vcpu_info *)(vinfo_page + 128);
    unsigned long before;
    uint64_t giveup;
    struct frame f;
    long rc, v;

    rc = hypercall_vcpu_op(VCPUOP_register_vcpu_info, 0, &r);
    if (rc != -XEN_EINVAL)
        why("register_vcpu_info(offset %u) = %ld, Xen gives -EINVAL", r.offset, rc);
    local_irq_disable();
    r.offset = 128;
    rc = hypercall_vcpu_op(VCPUOP_register_vcpu_info, 0, &r);
    if (rc) {
        local_irq_enable();
        why("register_vcpu_info(our page, offset 128) = %ld", rc);
        check_why("vcpu-info-register");
        return;
    }
    if (!READ_ONCE(nv->evtchn_upcall_mask))
        why("the upcall mask did not move with vcpu_info");
    if (!READ_ONCE(nv->evtchn_upcall_pending) || READ_ONCE(nv->evtchn_pending_sel) != ~0UL)
        why("Xen marks every event pending in the new vcpu_info (pending %u, sel %#lx)",
            nv->evtchn_upcall_pending, (unsigned long)nv->evtchn_pending_sel);
    vcpu_info_ptr = nv;
    rc = hypercall_vcpu_op(VCPUOP_register_vcpu_info, 0, &r);
    if (rc != -XEN_EINVAL)
        why("a second register_vcpu_info = %ld, Xen gives -EINVAL", rc);
    local_irq_enable();                         /* takes the spurious upcall */

    /* events through the new place */
    if (bind_ipi(&ev.port) == 0) {
        ev.deliveries = 0;
        local_irq_disable();
        register_event_callback(abt_evt_entry);
        evtchn_send(ev.port);
        if (ev.deliveries || !READ_ONCE(nv->evtchn_upcall_pending))
            why("a masked send: %u deliveries, pending %u in the new vcpu_info",
                ev.deliveries, nv->evtchn_upcall_pending);
        WRITE_ONCE(nv->evtchn_upcall_mask, 0);
        mb();
        hypercall_xen_version(XENVER_version, NULL);
        if (ev.deliveries != 1)
            why("unmasked in the new vcpu_info: %u deliveries, expected 1", ev.deliveries);
        restore_library_callback();
        close_port(ev.port);
    } else {
        why("EVTCHNOP_bind_ipi failed");
    }

    /* a page fault (answered by the shim alone) carries the new mask */
    local_irq_disable();
    v = catch_call(t_pf_unmapped, NULL);
    local_irq_enable();
    f = caught_frame(true);
    if (v != X86_EXC_PF || ((f.cs >> 16) & 0xff) != 1 || (f.eflags & EFLAGS_IF))
        why("#PF with events masked: vector %ld, CS %#x EFLAGS %#x (want mask 1, IF clear)",
            v, f.cs, f.eflags);
    if (READ_ONCE(nv->arch.cr2) != 0x0DEAD000)
        why("cr2 in the new vcpu_info is %#lx, want 0xdead000", (unsigned long)nv->arch.cr2);
    v = catch_call(t_pf_unmapped, NULL);
    f = caught_frame(true);
    if (v != X86_EXC_PF || ((f.cs >> 16) & 0xff) != 0 || !(f.eflags & EFLAGS_IF))
        why("#PF with events on: vector %ld, CS %#x EFLAGS %#x (want mask 0, IF set)",
            v, f.cs, f.eflags);

    /* the timer wakes a blocked vCPU through the new place */
    before = timer_events();
    giveup = system_time_ns() + 1000 * NSEC_PER_MSEC;
    hypercall_set_timer_op(system_time_ns() + 5 * NSEC_PER_MSEC);
    while (timer_events() == before && system_time_ns() < giveup) {
        local_irq_disable();
        if (timer_events() != before)
            break;
        block();
    }
    local_irq_enable();
    if (timer_events() == before)
        why("no timer event within 1 s after moving vcpu_info");
    check_why("vcpu-info-register");
}

void test_events(void)
{
    printk("-- events and time\n");
    check_upcall();
    check_timers();
    check_time();
    check_register_vcpu_info();
}
