/*
 * Event channel upcalls and helpers.
 *
 * Xen (2-level ABI) sets evtchn_pending[port / 32] bit port % 32; if the
 * port is unmasked it sets bit port / 32 of vcpu_info.evtchn_pending_sel
 * and evtchn_upcall_pending, and enters hypervisor_callback (entry.S)
 * with events masked unless evtchn_upcall_mask was already set.
 */
#include "console.h"
#include "events.h"
#include "hypercall.h"
#include "sched.h"
#include "traps.h"

struct vcpu_info *vcpu_info_ptr;

extern char hypervisor_callback[], failsafe_callback[];    /* entry.S */

static struct {
    evtchn_handler_t fn;
    void *data;
} evtchn_handlers[NR_EVENT_CHANNELS];

static void register_callback(unsigned int type, unsigned int flags,
                              const void *entry)
{
    struct callback_register cb = {
        .type = type,
        .flags = flags,
        .cs = FLAT_KERNEL_CS,
        .eip = (uint32_t)(unsigned long)entry,
    };
    long rc = hypercall_callback_op(CALLBACKOP_register, &cb);

    if (rc) {
        early_printk("callback_op(register, type %u) failed: %ld\n", type, rc);
        xen_shutdown_now(SHUTDOWN_crash);
    }
}

void events_init(void)
{
    register_callback(CALLBACKTYPE_event, 0, hypervisor_callback);
    /* The failsafe path is fatal anyway: run it with events masked. */
    register_callback(CALLBACKTYPE_failsafe, CALLBACKF_mask_events,
                      failsafe_callback);
}

void evtchn_set_handler(evtchn_port_t port, evtchn_handler_t handler,
                        void *data)
{
    unsigned long flags;

    if (port >= NR_EVENT_CHANNELS)
        return;
    flags = local_irq_save();
    evtchn_handlers[port].fn = handler;
    evtchn_handlers[port].data = data;
    local_irq_restore(flags);
}

long evtchn_bind_virq(unsigned int virq, evtchn_port_t *port)
{
    struct evtchn_bind_virq op = { .virq = virq, .vcpu = 0 };
    long rc = hypercall_event_channel_op(EVTCHNOP_bind_virq, &op);

    if (rc == 0)
        *port = op.port;
    return rc;
}

long evtchn_send(evtchn_port_t port)
{
    struct evtchn_send op = { .port = port };

    return hypercall_event_channel_op(EVTCHNOP_send, &op);
}

void evtchn_mask(evtchn_port_t port)
{
    if (port < NR_EVENT_CHANNELS)
        atomic_set_bit(port % 32, &shared_info->evtchn_mask[port / 32]);
}

void evtchn_unmask(evtchn_port_t port)
{
    struct vcpu_info *v = this_vcpu();
    unsigned int word = port / 32, bit = port % 32;

    if (port >= NR_EVENT_CHANNELS)
        return;

    atomic_clear_bit(bit, &shared_info->evtchn_mask[word]);

    /*
     * Xen drops the upcall for an edge on a masked port but leaves the
     * pending bit set.  Raise the upcall ourselves, as Xen would have.
     * (The locked clear above orders this read after the unmask.)
     */
    if (READ_ONCE(shared_info->evtchn_pending[word]) & (1U << bit)) {
        atomic_set_bit(word, &v->evtchn_pending_sel);
        WRITE_ONCE(v->evtchn_upcall_pending, 1);
        if (!READ_ONCE(v->evtchn_upcall_mask))
            force_evtchn_callback();
    }
}

void force_evtchn_callback(void)
{
    /* Xen delivers pending events on the way back from any hypercall. */
    hypercall_xen_version(XENVER_version, NULL);
}

static void dispatch(evtchn_port_t port)
{
    evtchn_handler_t fn = evtchn_handlers[port].fn;

    /* No handler: the event only had to wake a block()ed vCPU. */
    if (fn)
        fn(port, evtchn_handlers[port].data);
}

void do_event_upcall(struct cpu_regs *regs)
{
    struct vcpu_info *v = this_vcpu();

    (void)regs;
    do {
        uint32_t sel;

        /* Clear the summary before reading the selector (xchg orders). */
        WRITE_ONCE(v->evtchn_upcall_pending, 0);
        sel = xchg32(&v->evtchn_pending_sel, 0);

        while (sel) {
            unsigned int word = lowest_bit(sel);
            uint32_t pending;

            sel &= sel - 1;
            pending = READ_ONCE(shared_info->evtchn_pending[word]) &
                      ~READ_ONCE(shared_info->evtchn_mask[word]);
            while (pending) {
                unsigned int bit = lowest_bit(pending);

                pending &= pending - 1;
                atomic_clear_bit(bit, &shared_info->evtchn_pending[word]);
                dispatch(word * 32 + bit);
            }
        }
        /* An event that came in meanwhile set upcall_pending again. */
    } while (READ_ONCE(v->evtchn_upcall_pending));
}
