/*
 * Inter-domain event channels (event_channel.h): offer a port to another
 * domain, bind to one it offered, close.
 */
#ifndef INTERDOMAIN_H
#define INTERDOMAIN_H

#include "compiler.h"
#include "xen-abi.h"

#define EVTCHNOP_bind_interdomain   0
#define EVTCHNOP_close              3
#define EVTCHNOP_alloc_unbound      6

struct evtchn_alloc_unbound {
    domid_t dom, remote_dom;    /* IN */
    evtchn_port_t port;         /* OUT */
};

struct evtchn_bind_interdomain {
    domid_t remote_dom;         /* IN */
    evtchn_port_t remote_port;  /* IN */
    evtchn_port_t local_port;   /* OUT */
};

_Static_assert(sizeof(struct evtchn_alloc_unbound) == 8, "evtchn_alloc_unbound");
_Static_assert(sizeof(struct evtchn_bind_interdomain) == 12, "evtchn_bind_interdomain");

/* A new port that domain remote may bind; the port or a negative errno. */
long evtchn_alloc_unbound(domid_t remote);

/* Bind remote's port; our new port or a negative errno.  Xen marks the new
 * port pending (so no event is lost in the race): that edge is cleared. */
long evtchn_bind_interdomain(domid_t remote, evtchn_port_t remote_port);

long evtchn_close(evtchn_port_t port);

#endif /* INTERDOMAIN_H */
