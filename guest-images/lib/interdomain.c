/*
 * Inter-domain event channels (see interdomain.h).
 */
#include "events.h"
#include "hypercall.h"
#include "interdomain.h"

long evtchn_alloc_unbound(domid_t remote)
{
    struct evtchn_alloc_unbound op = { .dom = DOMID_SELF, .remote_dom = remote };
    long rc = hypercall_event_channel_op(EVTCHNOP_alloc_unbound, &op);

    return rc ? rc : (long)op.port;
}

long evtchn_bind_interdomain(domid_t remote, evtchn_port_t remote_port)
{
    struct evtchn_bind_interdomain op = { .remote_dom = remote,
                                          .remote_port = remote_port };
    unsigned long flags = local_irq_save();
    long rc = hypercall_event_channel_op(EVTCHNOP_bind_interdomain, &op);

    if (rc == 0)
        atomic_clear_bit(op.local_port % 32,
                         &shared_info->evtchn_pending[op.local_port / 32]);
    local_irq_restore(flags);
    return rc ? rc : (long)op.local_port;
}

long evtchn_close(evtchn_port_t port)
{
    struct evtchn_send op = { .port = port };   /* evtchn_close: the same shape */

    return hypercall_event_channel_op(EVTCHNOP_close, &op);
}
