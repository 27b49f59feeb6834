/*
 * The C entry point (called from head.S on our own stack).  The order
 * matters: traps first so faults are reported, callbacks before anything
 * can unmask events, shared_info before anything reads vcpu_info, the
 * timer before the console (a console flush may wait on it).
 */
#include "clock.h"
#include "console.h"
#include "events.h"
#include "mm.h"
#include "sched.h"
#include "setup.h"
#include "string.h"
#include "traps.h"
#include "xenstore.h"

start_info_t *start_info;

void xenguest_main(start_info_t *si)
{
    int rc;

    start_info = si;
    early_printk("xenguest: start_info at %p, magic \"%.32s\", %u pages\n",
                 si, si->magic, si->nr_pages);
    if (strncmp(si->magic, XEN_GUEST_MAGIC, sizeof(XEN_GUEST_MAGIC)) != 0)
        early_printk("xenguest: warning: start_info magic is not \""
                     XEN_GUEST_MAGIC "\"\n");

    traps_init();
    events_init();
    map_shared_info();
    clock_init();
    console_init(si);
    xs_init();      /* quiet: a guest without XenStore simply has none */
    local_irq_enable();

    rc = main();
    xen_shutdown(rc == 0 ? SHUTDOWN_poweroff : SHUTDOWN_crash);
}
