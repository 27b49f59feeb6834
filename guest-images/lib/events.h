/*
 * Event channels (2-level ABI) and the virtual interrupt flag.
 *
 * "Interrupts" of a PV guest are event upcalls; vcpu_info's
 * evtchn_upcall_mask plays the part of EFLAGS.IF (1 = disabled).
 */
#ifndef EVENTS_H
#define EVENTS_H

#include "compiler.h"
#include "mm.h"
#include "xen-abi.h"

typedef void (*evtchn_handler_t)(evtchn_port_t port, void *data);

/* Register the event and failsafe callbacks (events stay masked). */
void events_init(void);

/* Run handler(port, data) from the upcall whenever port fires. */
void evtchn_set_handler(evtchn_port_t port, evtchn_handler_t handler,
                        void *data);
/* EVTCHNOP_bind_virq on vCPU 0; returns 0 or a negative Xen errno. */
long evtchn_bind_virq(unsigned int virq, evtchn_port_t *port);
long evtchn_send(evtchn_port_t port);
void evtchn_mask(evtchn_port_t port);
/* Clear the mask bit and deliver an event that arrived while masked. */
void evtchn_unmask(evtchn_port_t port);

/* Make Xen look at evtchn_upcall_pending now (any hypercall does). */
void force_evtchn_callback(void);

/* This vCPU's vcpu_info: in shared_info until VCPUOP_register_vcpu_info
 * moves it (set vcpu_info_ptr to the new place once that succeeded). */
extern struct vcpu_info *vcpu_info_ptr;

static inline struct vcpu_info *this_vcpu(void)
{
    return vcpu_info_ptr ? vcpu_info_ptr : &shared_info->vcpu_info[0];
}

static inline void local_irq_disable(void)
{
    WRITE_ONCE(this_vcpu()->evtchn_upcall_mask, 1);
    barrier();
}

static inline void local_irq_enable(void)
{
    struct vcpu_info *v = this_vcpu();

    barrier();
    WRITE_ONCE(v->evtchn_upcall_mask, 0);
    /* Unmask before looking at pending (store, then load: full barrier). */
    mb();
    if (READ_ONCE(v->evtchn_upcall_pending))
        force_evtchn_callback();
}

/* Returns the old mask (non-zero: events were disabled). */
static inline unsigned long local_irq_save(void)
{
    unsigned long flags = READ_ONCE(this_vcpu()->evtchn_upcall_mask);

    local_irq_disable();
    return flags;
}

static inline void local_irq_restore(unsigned long flags)
{
    if (flags)
        local_irq_disable();
    else
        local_irq_enable();
}

static inline bool irqs_disabled(void)
{
    return READ_ONCE(this_vcpu()->evtchn_upcall_mask) != 0;
}

#endif /* EVENTS_H */
