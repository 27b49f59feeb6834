/*
 * xsflood: a hostile XenStore client.  It floods xenstored with requests
 * without reading replies, reaches outside its permissions and quotas,
 * sends an oversized message and corrupts the ring indices, recovering
 * each time through the ring reconnection feature.  Every abuse must get
 * an error or a broken (then reset) connection, and nothing may be lost
 * or stall.  Prints "check <name>: ok|FAIL", then "Test result: ...".
 * The command line may say "flood=SECONDS" (default 2).
 */
#include "xenguest.h"
#include "xenstore.h"

#define XENSTORE_ERROR_RINGIDX      2
#define XENSTORE_ERROR_PROTO        3
#define XENSTORE_RECONNECT          1
#define XENSTORE_SERVER_FEATURE_RECONNECTION 1

static struct xenstore_domain_interface *ring;
static evtchn_port_t port;
static bool failed;

static void check(const char *name, bool ok)
{
    printk("check %s: %s\n", name, ok ? "ok" : "FAIL");
    if (!ok)
        failed = true;
}

static unsigned int cmdline_uint(const char *key, unsigned int dflt)
{
    const char *p = start_info->cmd_line;
    size_t n = strlen(key);
    unsigned int v = 0;

    for (; *p; p++) {
        if (strncmp(p, key, n) == 0 && p[n] == '=') {
            for (p += n + 1; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (unsigned int)(*p - '0');
            return v;
        }
    }
    return dflt;
}

/* Wait (blocked) until cond() or 5 s. */
static bool wait_for(bool (*cond)(void))
{
    uint64_t deadline = system_time_ns() + 5 * NSEC_PER_SEC;
    unsigned long flags = local_irq_save();
    bool ok;

    while (!(ok = cond()) && system_time_ns() < deadline) {
        hypercall_set_timer_op(system_time_ns() + NSEC_PER_MSEC);
        block();
        local_irq_disable();
    }
    local_irq_restore(flags);
    return ok;
}

/* ---- raw ring access ---- */
static size_t req_space(void)
{
    return XENSTORE_RING_SIZE - (ring->req_prod - READ_ONCE(ring->req_cons));
}

static void req_put(const void *data, size_t len)
{
    XENSTORE_RING_IDX prod = ring->req_prod;
    size_t i;

    for (i = 0; i < len; i++)
        ring->req[(prod + i) & (XENSTORE_RING_SIZE - 1)] = ((const char *)data)[i];
    wmb();
    WRITE_ONCE(ring->req_prod, prod + len);
}

static size_t rsp_avail(void)
{
    return READ_ONCE(ring->rsp_prod) - ring->rsp_cons;
}

static void rsp_get(void *data, size_t len)
{
    XENSTORE_RING_IDX cons = ring->rsp_cons;
    size_t i;

    rmb();
    for (i = 0; i < len; i++)
        ((char *)data)[i] = ring->rsp[(cons + i) & (XENSTORE_RING_SIZE - 1)];
    mb();
    WRITE_ONCE(ring->rsp_cons, cons + len);
}

/* ---- the checks ---- */
static char expect_domid[16];

/*
 * Requests as fast as the ring takes them; replies are read only when the
 * request ring is full.  Every reply must come back, in order, intact.
 */
static void flood(unsigned int seconds)
{
    static const char path[] = "domid";
    uint64_t end = system_time_ns() + seconds * NSEC_PER_SEC;
    uint32_t sent = 0, got = 0, bad = 0;
    struct xsd_sockmsg hdr;
    char body[32];
    size_t need = sizeof(hdr) + sizeof(path);

    for (;;) {
        bool sending = system_time_ns() < end;
        unsigned long flags;

        while (sending && req_space() >= need) {
            hdr = (struct xsd_sockmsg){ XS_READ, 1000 + sent, 0, sizeof(path) };
            req_put(&hdr, sizeof(hdr));
            req_put(path, sizeof(path));
            sent++;
        }
        evtchn_send(port);
        while (rsp_avail() >= sizeof(hdr)) {
            XENSTORE_RING_IDX cons = ring->rsp_cons;
            size_t i;

            for (i = 0; i < sizeof(hdr); i++)
                ((char *)&hdr)[i] = ring->rsp[(cons + i) & (XENSTORE_RING_SIZE - 1)];
            if (hdr.len >= sizeof(body) || rsp_avail() < sizeof(hdr) + hdr.len)
                break;
            rsp_get(&hdr, sizeof(hdr));
            rsp_get(body, hdr.len);
            body[hdr.len] = '\0';
            if (hdr.type != XS_READ || hdr.req_id != 1000 + got ||
                strcmp(body, expect_domid) != 0)
                bad++;
            got++;
        }
        if (!sending && got == sent)
            break;
        flags = local_irq_save();
        if (rsp_avail() < sizeof(hdr)) {
            hypercall_set_timer_op(system_time_ns() + 100 * NSEC_PER_MSEC);
            block();
        }
        local_irq_restore(flags);
        if (!sending && system_time_ns() > end + 10 * NSEC_PER_SEC)
            break;
    }
    printk("flood: %u requests, %u replies, %u wrong\n", sent, got, bad);
    check("flood-nothing-lost", sent > 100 && got == sent && bad == 0);
}

static bool connected(void)
{
    return READ_ONCE(ring->connection) == 0;
}

static bool broken(void)
{
    return READ_ONCE(ring->error) != 0;
}

/* Ask for a fresh ring (xenstore-ring.txt, "Ring reconnection"). */
static bool reconnect(void)
{
    WRITE_ONCE(ring->connection, XENSTORE_RECONNECT);
    mb();
    evtchn_send(port);
    return wait_for(connected) && ring->error == 0 && ring->req_prod == 0;
}

static void oversized(void)
{
    struct xsd_sockmsg hdr = { XS_READ, 7, 0, XENSTORE_PAYLOAD_MAX + 1 };

    req_put(&hdr, sizeof(hdr));
    evtchn_send(port);
    check("oversized-breaks-connection", wait_for(broken) &&
          ring->error == XENSTORE_ERROR_PROTO);
    check("oversized-reconnect", reconnect());
}

static void bad_indices(void)
{
    WRITE_ONCE(ring->req_prod, ring->req_cons + 3 * XENSTORE_RING_SIZE);
    evtchn_send(port);
    check("bad-indices-break-connection", wait_for(broken) &&
          ring->error == XENSTORE_ERROR_RINGIDX);
    check("bad-indices-reconnect", reconnect());
}

static void permissions(void)
{
    char v[64];

    check("perm-read-dom0", xs_read(XBT_NULL, "/local/domain/0/name", v, sizeof(v)) == -13);
    check("perm-write-root", xs_write(XBT_NULL, "/evil", "x") == -13);
    check("perm-write-other-domain",
          xs_write(XBT_NULL, "/local/domain/0/backend/evil", "x") == -13);
    check("perm-write-own-name", xs_write(XBT_NULL, "name", "evil") == -13);
    check("perm-write-own-data", xs_write(XBT_NULL, "data/ok", "fine") == 0);
}

static void quotas(void)
{
    xs_transaction_t t[11];
    int i, rc = 0;

    for (i = 0; i < 11 && rc == 0; i++)
        rc = xs_transaction_start(&t[i]);
    check("quota-transactions", i == 11 && rc == -28);
    while (--i > 0)
        xs_transaction_end(t[i - 1], true);
}

int main(void)
{
    unsigned long pfn = mfn_to_pfn(start_info->store_mfn);

    ring = pfn_to_virt(pfn);
    port = start_info->store_evtchn;
    printk("xsflood: hostile XenStore client\n");
    if (xs_read(XBT_NULL, "domid", expect_domid, sizeof(expect_domid)) < 0) {
        printk("xsflood: no XenStore\nTest result: FAILURE\n");
        return 0;
    }
    check("server-reconnection-feature",
          ring->server_features & XENSTORE_SERVER_FEATURE_RECONNECTION);
    flood(cmdline_uint("flood", 2));
    permissions();
    quotas();
    oversized();
    bad_indices();
    {
        char v[16];

        check("works-after-abuse", xs_read(XBT_NULL, "domid", v, sizeof(v)) > 0 &&
              strcmp(v, expect_domid) == 0);
    }
    printk("Test result: %s\n", failed ? "FAILURE" : "SUCCESS");
    return 0;
}
