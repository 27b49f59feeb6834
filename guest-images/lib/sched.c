/*
 * Domain shutdown.
 */
#include "console.h"
#include "sched.h"

void xen_shutdown_now(unsigned int reason)
{
    struct sched_shutdown op = { .reason = reason };

    for (;;) {
        long rc = hypercall_sched_op(SCHEDOP_shutdown, &op);

        /* Only a suspend returns; anything else means the call failed. */
        early_printk("SCHEDOP_shutdown(%u) returned %ld\n", reason, rc);
        hypercall_sched_op(SCHEDOP_block, NULL);
    }
}

void xen_shutdown(unsigned int reason)
{
    /* The backend may still hold output the ring has not delivered. */
    console_flush();
    xen_shutdown_now(reason);
}
