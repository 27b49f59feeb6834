/*
 * Giving up the CPU and ending the domain (sched_op).
 */
#ifndef SCHED_H
#define SCHED_H

#include "hypercall.h"

/*
 * SCHEDOP_block: sleep until an event is pending.  Xen unmasks events
 * (evtchn_upcall_mask = 0) and checks for pending ones atomically, so the
 * idiom is: local_irq_disable(); check for work; if none, block(); the
 * upcall runs before block() returns, with events left enabled.
 */
static inline void block(void)
{
    hypercall_sched_op(SCHEDOP_block, NULL);
}

static inline void yield(void)
{
    hypercall_sched_op(SCHEDOP_yield, NULL);
}

/* Flush the console, then SCHEDOP_shutdown with a SHUTDOWN_* reason. */
void __noreturn xen_shutdown(unsigned int reason);

/* The same without touching the console (for early or nested failures). */
void __noreturn xen_shutdown_now(unsigned int reason);

#endif /* SCHED_H */
