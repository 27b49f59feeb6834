/*
 * The PV control interface: watch ~/control/shutdown and ~/control/sysrq
 * as a Linux guest does (drivers/xen/manage.c) -- acknowledge a request
 * by clearing the node, then act on it.
 */
#ifndef CONTROL_H
#define CONTROL_H

/* Register the watches (needs xs_init); 0 or a negative error. */
int control_init(void);

#endif /* CONTROL_H */
