/*
 * control/shutdown and control/sysrq (see control.h).  Runs from deferred
 * work, never inside the upcall.
 */
#include "console.h"
#include "control.h"
#include "sched.h"
#include "string.h"
#include "xenstore.h"

#define XEN_EAGAIN  11

/* Read and clear a control node in one transaction; its old value. */
static int take_request(const char *path, char *value, size_t size)
{
    xs_transaction_t t;
    int rc;

    for (;;) {
        rc = xs_transaction_start(&t);
        if (rc)
            return rc;
        rc = xs_read(t, path, value, size);
        if (rc < 0 || value[0] == '\0') {
            xs_transaction_end(t, true);
            return rc < 0 ? rc : 0;
        }
        rc = xs_write(t, path, "");
        if (rc) {
            xs_transaction_end(t, true);
            return rc;
        }
        rc = xs_transaction_end(t, false);
        if (rc != -XEN_EAGAIN)
            return rc;
    }
}

static void shutdown_requested(const char *path, const char *token)
{
    char req[32];

    (void)path;
    (void)token;
    if (take_request("control/shutdown", req, sizeof(req)) || req[0] == '\0')
        return;
    if (strcmp(req, "poweroff") == 0 || strcmp(req, "halt") == 0) {
        printk("\ncontrol/shutdown: %s: powering off.\n", req);
        xen_shutdown(SHUTDOWN_poweroff);
    } else if (strcmp(req, "reboot") == 0) {
        printk("\ncontrol/shutdown: reboot: rebooting.\n");
        xen_shutdown(SHUTDOWN_reboot);
    } else {
        printk("\ncontrol/shutdown: '%s' is not supported\n", req);
    }
}

static void sysrq_requested(const char *path, const char *token)
{
    char key[8];

    (void)path;
    (void)token;
    if (take_request("control/sysrq", key, sizeof(key)) || key[0] == '\0')
        return;
    printk("\nsysrq: '%c'\n", key[0]);
}

int control_init(void)
{
    int rc = xs_watch_callback("control/shutdown", "control-shutdown", shutdown_requested);

    if (rc)
        return rc;
    return xs_watch_callback("control/sysrq", "control-sysrq", sysrq_requested);
}
