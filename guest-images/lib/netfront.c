/*
 * netfront (see netfront.h).
 *
 * The handshake is the one Linux's xen-netfront and Mini-OS's netfront
 * perform: read backend-id, backend and mac from device/vif/N, wait for
 * the back end's InitWait, check feature-rx-copy, then in one transaction
 * write tx-ring-ref, rx-ring-ref, event-channel, request-rx-copy,
 * feature-rx-notify, feature-sg and state = Connected, and wait for the
 * back end's Connected.  When the back end goes to Closing (network-
 * detach), we go Closing, wait for its Closing, end our grants and close.
 *
 * Uniprocessor: the ring state is touched by the event handler (upcall,
 * events masked) and by netfront_xmit with events masked.
 */
#include "clock.h"
#include "console.h"
#include "events.h"
#include "interdomain.h"
#include "mm.h"
#include "netfront.h"
#include "printf.h"
#include "sched.h"
#include "string.h"
#include "xenstore.h"

#define XenbusStateInitWait     2
#define XenbusStateConnected    4
#define XenbusStateClosing      5
#define XenbusStateClosed       6

#define NF_PAGES        (2 + NF_RX_BUFS + NF_TX_BUFS)
#define STATE_TIMEOUT   (10 * NSEC_PER_SEC)
#define TX_WAIT_TIMEOUT (2 * NSEC_PER_SEC)

static uint8_t nf_mem[NF_MAX_DEVS][NF_PAGES][PAGE_SIZE] __aligned(PAGE_SIZE);
static struct netfront devs[NF_MAX_DEVS];
static netfront_rx_fn default_rx;
static void (*on_added)(struct netfront *nf);
static bool busy;               /* a connect/disconnect is running */

struct netfront *netfront_get(unsigned int index)
{
    if (index >= NF_MAX_DEVS || !devs[index].used)
        return NULL;
    return &devs[index];
}

struct netfront *netfront_by_devid(unsigned int devid)
{
    unsigned int i;

    for (i = 0; i < NF_MAX_DEVS; i++)
        if (devs[i].used && devs[i].devid == devid)
            return &devs[i];
    return NULL;
}

/* ---- XenStore helpers ---- */
static int read_key(const struct netfront *nf, bool backend, const char *key,
                    char *buf, size_t size)
{
    char path[160];

    snprintf(path, sizeof(path), "%s/%s", backend ? nf->backend : nf->nodename, key);
    return xs_read(XBT_NULL, path, buf, size);
}

static long parse_ulong(const char *s)
{
    long v = 0;

    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (*s - '0');
    return v;
}

static long read_int(const struct netfront *nf, bool backend, const char *key)
{
    char buf[24];

    if (read_key(nf, backend, key, buf, sizeof(buf)) < 0)
        return -1;
    return parse_ulong(buf);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool parse_mac(const char *s, uint8_t mac[NF_ETH_ALEN])
{
    int i;

    for (i = 0; i < NF_ETH_ALEN; i++) {
        int hi = hexval(s[0]), lo = hexval(s[1]);

        if (hi < 0 || lo < 0)
            return false;
        mac[i] = (uint8_t)(hi << 4 | lo);
        s += 2;
        if (i < NF_ETH_ALEN - 1 && *s++ != ':')
            return false;
    }
    return *s == '\0';
}

static int switch_state(struct netfront *nf, int state)
{
    char path[48], val[4];

    snprintf(path, sizeof(path), "%s/state", nf->nodename);
    snprintf(val, sizeof(val), "%d", state);
    return xs_write(XBT_NULL, path, val);
}

/* Poll the back end's state until it satisfies want (or the deadline). */
static long wait_backend_state(struct netfront *nf, long lo, long hi)
{
    uint64_t deadline = system_time_ns() + STATE_TIMEOUT;
    long st;

    for (;;) {
        st = read_int(nf, true, "state");
        if ((st >= lo && st <= hi) || system_time_ns() > deadline)
            return st;
        if (st < 0 && lo >= XenbusStateClosing)
            return st;                      /* the back end is gone */
        if (st >= XenbusStateClosing && lo < XenbusStateClosing)
            return st;
        sleep_ms(5);
    }
}

/* ---- rings ---- */
static bool push_requests(struct sring_header *h, RING_IDX new_prod)
{
    RING_IDX old = h->req_prod;

    wmb();      /* the requests before the index that publishes them */
    WRITE_ONCE(h->req_prod, new_prod);
    mb();       /* the index before reading req_event */
    return (RING_IDX)(new_prod - READ_ONCE(h->req_event)) < (RING_IDX)(new_prod - old);
}

void netfront_kick(struct netfront *nf)
{
    evtchn_send(nf->port);
}

static void tx_gc(struct netfront *nf)
{
    RING_IDX prod, cons;

    do {
        prod = READ_ONCE(nf->txs->h.rsp_prod);
        rmb();
        for (cons = nf->tx_cons; cons != prod; cons++) {
            struct netif_tx_response rsp = nf->txs->ring[cons % NET_RING_SIZE].rsp;

            if (rsp.status == NETIF_RSP_NULL)
                continue;
            if (rsp.status != NETIF_RSP_OKAY) {
                nf->stats.tx_errors++;
                nf->stats.last_tx_status = rsp.status;
            }
            if (rsp.id < NF_TX_BUFS && nf->nr_tx_free < NF_TX_BUFS)
                nf->tx_free[nf->nr_tx_free++] = rsp.id;
        }
        nf->tx_cons = prod;
        /* Ask for an event for the next response, then re-check. */
        WRITE_ONCE(nf->txs->h.rsp_event, prod + 1);
        mb();
    } while (READ_ONCE(nf->txs->h.rsp_prod) != prod);
}

static void deliver(struct netfront *nf, const uint8_t *data, unsigned int len,
                    unsigned int flags)
{
    nf->stats.rx_packets++;
    nf->stats.rx_bytes += len;
    if (flags & NETRXF_csum_blank)
        nf->stats.rx_csum_blank++;
    if (nf->rx)
        nf->rx(nf, data, len, flags);
}

static void rx_post(struct netfront *nf, uint16_t id)
{
    struct netif_rx_request *req = &nf->rxs->ring[nf->rx_prod % NET_RING_SIZE].req;

    req->id = id;
    req->gref = nf->rx_gref[id];
    nf->rx_prod++;
}

static void rx_process(struct netfront *nf)
{
    RING_IDX prod, cons = nf->rx_cons, posted = nf->rx_prod;

    do {
        prod = READ_ONCE(nf->rxs->h.rsp_prod);
        rmb();
        if ((RING_IDX)(prod - cons) > NET_RING_SIZE) {
            nf->stats.rx_errors++;
            break;                              /* nonsense from the back end */
        }
        for (; cons != prod; cons++) {
            struct netif_rx_response rsp = nf->rxs->ring[cons % NET_RING_SIZE].rsp;
            bool more = rsp.flags & NETRXF_more_data;

            if (rsp.id >= NF_RX_BUFS) {
                nf->stats.rx_errors++;
                continue;
            }
            if (rsp.status < 0 || (unsigned int)rsp.offset + (unsigned int)rsp.status > PAGE_SIZE) {
                nf->stats.rx_errors++;
                nf->frag_bad = true;
            } else if (!more && !nf->frag_len && !nf->frag_bad) {
                deliver(nf, nf->rx_page[rsp.id] + rsp.offset, (unsigned int)rsp.status,
                        rsp.flags);
            } else if (!nf->frag_bad) {
                if (!nf->frag_len)
                    nf->frag_flags = rsp.flags;
                if (nf->frag_len + (unsigned int)rsp.status > sizeof(nf->frag)) {
                    nf->frag_bad = true;
                } else {
                    memcpy(nf->frag + nf->frag_len, nf->rx_page[rsp.id] + rsp.offset,
                           (size_t)rsp.status);
                    nf->frag_len += (unsigned int)rsp.status;
                }
            }
            if (!more) {
                if (nf->frag_len && !nf->frag_bad)
                    deliver(nf, nf->frag, nf->frag_len, nf->frag_flags);
                else if (nf->frag_bad)
                    nf->stats.rx_errors++;
                nf->frag_len = 0;
                nf->frag_bad = false;
            }
            if (nf->hold_rx && nf->rx_held < NF_RX_BUFS)
                nf->held_ids[nf->rx_held++] = rsp.id;
            else
                rx_post(nf, rsp.id);
        }
        nf->rx_cons = cons;
        WRITE_ONCE(nf->rxs->h.rsp_event, cons + 1);
        mb();
    } while (READ_ONCE(nf->rxs->h.rsp_prod) != prod);

    if (nf->rx_prod != posted && push_requests(&nf->rxs->h, nf->rx_prod))
        evtchn_send(nf->port);
}

void netfront_poll(struct netfront *nf)
{
    unsigned long flags = local_irq_save();

    if (nf->connected) {
        tx_gc(nf);
        rx_process(nf);
    }
    local_irq_restore(flags);
}

void netfront_hold_rx(struct netfront *nf, bool hold)
{
    unsigned long flags = local_irq_save();
    unsigned int i;

    nf->hold_rx = hold;
    if (!hold && nf->rx_held) {
        for (i = 0; i < nf->rx_held; i++)
            rx_post(nf, nf->held_ids[i]);
        nf->rx_held = 0;
        if (push_requests(&nf->rxs->h, nf->rx_prod))
            evtchn_send(nf->port);
    }
    local_irq_restore(flags);
}

static void nf_event(evtchn_port_t port, void *data)
{
    struct netfront *nf = data;

    (void)port;
    if (nf->connected) {
        tx_gc(nf);
        rx_process(nf);
    }
}

int netfront_xmit(struct netfront *nf, const struct nf_seg *segs,
                  unsigned int nsegs, unsigned int flags, bool wait)
{
    unsigned int i, total = 0, nslots = 0, done = 0;
    unsigned long irq;
    uint64_t deadline = 0;
    bool notify;

    for (i = 0; i < nsegs; i++) {
        if (segs[i].len > PAGE_SIZE)
            return -1;
        total += segs[i].len;
        nslots += segs[i].len ? 1 : 0;
    }
    if (total < 14 || total > 0xFFFF || nslots > NF_TX_BUFS)
        return -1;

    irq = local_irq_save();
    while (nf->connected && nf->nr_tx_free < nslots) {
        tx_gc(nf);
        if (nf->nr_tx_free >= nslots)
            break;
        if (!wait) {
            nf->stats.tx_busy++;
            local_irq_restore(irq);
            return -1;
        }
        if (!deadline)
            deadline = system_time_ns() + TX_WAIT_TIMEOUT;
        else if (system_time_ns() > deadline) {
            nf->stats.tx_busy++;
            local_irq_restore(irq);
            return -1;
        }
        block();
        local_irq_disable();
    }
    if (!nf->connected) {
        local_irq_restore(irq);
        return -1;
    }
    for (i = 0; i < nsegs; i++) {
        struct netif_tx_request *req;
        uint16_t id;

        if (!segs[i].len)
            continue;
        id = nf->tx_free[--nf->nr_tx_free];
        memcpy(nf->tx_page[id], segs[i].data, segs[i].len);
        req = &nf->txs->ring[nf->tx_prod % NET_RING_SIZE].req;
        req->gref = nf->tx_gref[id];
        req->offset = 0;
        req->id = id;
        req->size = (uint16_t)(done == 0 ? total : segs[i].len);
        req->flags = (uint16_t)((done == 0 ? flags : 0) |
                                (done + 1 < nslots ? NETTXF_more_data : 0));
        nf->tx_prod++;
        done++;
    }
    notify = push_requests(&nf->txs->h, nf->tx_prod);
    if (notify)
        evtchn_send(nf->port);
    nf->stats.tx_packets++;
    nf->stats.tx_bytes += total;
    local_irq_restore(irq);
    return 0;
}

/* ---- connect and disconnect ---- */
static void release(struct netfront *nf)
{
    unsigned int i;

    if (nf->port) {
        evtchn_mask(nf->port);
        evtchn_set_handler(nf->port, NULL, NULL);
        evtchn_close(nf->port);
        nf->port = 0;
    }
    /* Grants the back end still holds stay (Xen's rule: no revoke in use). */
    if (nf->tx_ring_ref)
        gnttab_end_access(nf->tx_ring_ref);
    if (nf->rx_ring_ref)
        gnttab_end_access(nf->rx_ring_ref);
    for (i = 0; i < NF_RX_BUFS; i++)
        if (nf->rx_gref[i])
            gnttab_end_access(nf->rx_gref[i]);
    for (i = 0; i < NF_TX_BUFS; i++)
        if (nf->tx_gref[i])
            gnttab_end_access(nf->tx_gref[i]);
    nf->tx_ring_ref = nf->rx_ring_ref = 0;
    memset(nf->rx_gref, 0, sizeof(nf->rx_gref));
    memset(nf->tx_gref, 0, sizeof(nf->tx_gref));
}

static int grant(struct netfront *nf, void *page, bool ro, grant_ref_t *out)
{
    int ref = gnttab_grant_access(nf->backend_id, virt_to_mfn(page), ro);

    if (ref < 0)
        return ref;
    *out = (grant_ref_t)ref;
    return 0;
}

static int setup_rings(struct netfront *nf, unsigned int slot)
{
    unsigned int i;
    uint8_t (*mem)[PAGE_SIZE] = nf_mem[slot];
    int rc;

    memset(mem, 0, 2 * PAGE_SIZE);
    nf->txs = (struct netif_tx_sring *)mem[0];
    nf->rxs = (struct netif_rx_sring *)mem[1];
    /* SHARED_RING_INIT: events wanted for the first request/response */
    nf->txs->h.req_event = nf->txs->h.rsp_event = 1;
    nf->rxs->h.req_event = nf->rxs->h.rsp_event = 1;
    nf->tx_prod = nf->tx_cons = nf->rx_prod = nf->rx_cons = 0;
    if ((rc = grant(nf, nf->txs, false, &nf->tx_ring_ref)) ||
        (rc = grant(nf, nf->rxs, false, &nf->rx_ring_ref)))
        return rc;
    for (i = 0; i < NF_RX_BUFS; i++) {
        nf->rx_page[i] = mem[2 + i];
        if ((rc = grant(nf, nf->rx_page[i], false, &nf->rx_gref[i])))
            return rc;
        rx_post(nf, (uint16_t)i);
    }
    nf->rxs->h.req_prod = nf->rx_prod;      /* the back end is not looking yet */
    nf->nr_tx_free = 0;
    for (i = 0; i < NF_TX_BUFS; i++) {
        nf->tx_page[i] = mem[2 + NF_RX_BUFS + i];
        if ((rc = grant(nf, nf->tx_page[i], true, &nf->tx_gref[i])))
            return rc;
        nf->tx_free[nf->nr_tx_free++] = (uint16_t)(NF_TX_BUFS - 1 - i);
    }
    return 0;
}

static int publish(struct netfront *nf)
{
    static const char *const fixed[][2] = {
        { "request-rx-copy", "1" }, { "feature-rx-notify", "1" },
        { "feature-sg", "1" },
    };
    char path[96], val[16];
    xs_transaction_t t;
    unsigned int i;
    int rc;

again:
    if ((rc = xs_transaction_start(&t)))
        return rc;
    snprintf(path, sizeof(path), "%s/tx-ring-ref", nf->nodename);
    snprintf(val, sizeof(val), "%u", nf->tx_ring_ref);
    if ((rc = xs_write(t, path, val)))
        goto abort;
    snprintf(path, sizeof(path), "%s/rx-ring-ref", nf->nodename);
    snprintf(val, sizeof(val), "%u", nf->rx_ring_ref);
    if ((rc = xs_write(t, path, val)))
        goto abort;
    snprintf(path, sizeof(path), "%s/event-channel", nf->nodename);
    snprintf(val, sizeof(val), "%u", nf->port);
    if ((rc = xs_write(t, path, val)))
        goto abort;
    for (i = 0; i < ARRAY_SIZE(fixed); i++) {
        snprintf(path, sizeof(path), "%s/%s", nf->nodename, fixed[i][0]);
        if ((rc = xs_write(t, path, fixed[i][1])))
            goto abort;
    }
    snprintf(path, sizeof(path), "%s/state", nf->nodename);
    if ((rc = xs_write(t, path, "4")))
        goto abort;
    rc = xs_transaction_end(t, false);
    if (rc == -11)          /* EAGAIN: someone else changed the tree, redo */
        goto again;
    return rc;
abort:
    xs_transaction_end(t, true);
    return rc;
}

int netfront_connect(unsigned int devid, netfront_rx_fn rx)
{
    struct netfront *nf = NULL;
    unsigned int slot;
    char buf[96];
    long st, port;
    int rc;

    if (netfront_by_devid(devid))
        return 0;
    for (slot = 0; slot < NF_MAX_DEVS; slot++)
        if (!devs[slot].used) {
            nf = &devs[slot];
            break;
        }
    if (!nf) {
        printk("netfront: vif %u: no room (at most %u vifs)\n", devid, NF_MAX_DEVS);
        return -28;
    }
    memset(nf, 0, sizeof(*nf) - sizeof(nf->frag));
    nf->devid = devid;
    nf->rx = rx ? rx : default_rx;
    snprintf(nf->nodename, sizeof(nf->nodename), "device/vif/%u", devid);

    if ((st = read_int(nf, false, "backend-id")) < 0 ||
        read_key(nf, false, "backend", nf->backend, sizeof(nf->backend)) < 0 ||
        read_key(nf, false, "mac", buf, sizeof(buf)) < 0)
        return -2;                          /* not (yet) complete: ENOENT */
    nf->backend_id = (domid_t)st;
    if (!parse_mac(buf, nf->mac)) {
        printk("netfront: vif %u: bad mac '%s'\n", devid, buf);
        return -22;
    }
    nf->used = true;

    st = wait_backend_state(nf, XenbusStateInitWait, XenbusStateConnected);
    if (st < XenbusStateInitWait || st > XenbusStateConnected) {
        printk("netfront: vif %u: back end %s is in state %ld, not InitWait\n",
               devid, nf->backend, st);
        rc = -19;
        goto fail;
    }
    if (read_int(nf, true, "feature-rx-copy") != 1) {
        printk("netfront: vif %u: the back end cannot copy (no feature-rx-copy)\n", devid);
        rc = -95;
        goto fail;
    }
    port = evtchn_alloc_unbound(nf->backend_id);
    if (port < 0) {
        rc = (int)port;
        goto fail;
    }
    nf->port = (evtchn_port_t)port;
    if ((rc = setup_rings(nf, slot))) {
        printk("netfront: vif %u: cannot grant pages (%d)\n", devid, rc);
        goto fail;
    }
    evtchn_set_handler(nf->port, nf_event, nf);
    if ((rc = publish(nf))) {
        printk("netfront: vif %u: XenStore: %s\n", devid, xs_strerror(rc));
        goto fail;
    }
    st = wait_backend_state(nf, XenbusStateConnected, XenbusStateConnected);
    if (st != XenbusStateConnected) {
        printk("netfront: vif %u: back end did not connect (state %ld)\n", devid, st);
        rc = -19;
        goto fail;
    }
    if (read_key(nf, true, "ip", nf->ip, sizeof(nf->ip)) < 0)
        nf->ip[0] = '\0';
    nf->connected = true;
    evtchn_unmask(nf->port);
    netfront_poll(nf);
    printk("netfront: vif %u connected: mac %02x:%02x:%02x:%02x:%02x:%02x, back end %s\n",
           devid, nf->mac[0], nf->mac[1], nf->mac[2], nf->mac[3], nf->mac[4], nf->mac[5],
           nf->backend);
    return 0;
fail:
    release(nf);
    switch_state(nf, XenbusStateClosed);
    nf->used = false;
    return rc;
}

void netfront_disconnect(struct netfront *nf)
{
    unsigned long flags;

    if (!nf->used)
        return;
    flags = local_irq_save();
    nf->connected = false;
    local_irq_restore(flags);
    switch_state(nf, XenbusStateClosing);
    /* as Linux and Mini-OS: the back end's Closing is enough (it goes
     * Closed only after our own Closed) */
    wait_backend_state(nf, XenbusStateClosing, XenbusStateClosed);
    release(nf);
    switch_state(nf, XenbusStateClosed);
    printk("netfront: vif %u disconnected\n", nf->devid);
    nf->used = false;
}

/* ---- hot plug ---- */
static void rescan(const char *path, const char *token)
{
    char list[128];
    const char *p;
    unsigned int i;
    int n;

    (void)path;
    (void)token;
    if (busy)
        return;
    busy = true;
    /* detached: the back end is closing, or the device is gone */
    for (i = 0; i < NF_MAX_DEVS; i++) {
        struct netfront *nf = &devs[i];
        long st;

        if (!nf->used)
            continue;
        st = read_int(nf, true, "state");
        if (st < 0 || st >= XenbusStateClosing)
            netfront_disconnect(nf);
    }
    n = xs_directory(XBT_NULL, "device/vif", list, sizeof(list));
    for (p = list; n > 0 && p < list + n; p += strlen(p) + 1) {
        long id = parse_ulong(p);
        struct netfront *nf;
        char stpath[48], st[8];

        if (id < 0 || netfront_by_devid((unsigned int)id))
            continue;
        /* our own state: a device we closed waits for the toolstack to remove it */
        snprintf(stpath, sizeof(stpath), "device/vif/%ld/state", id);
        if (xs_read(XBT_NULL, stpath, st, sizeof(st)) >= 0 && parse_ulong(st) >= XenbusStateClosing)
            continue;
        if (netfront_connect((unsigned int)id, NULL) == 0) {
            nf = netfront_by_devid((unsigned int)id);
            if (nf) {
                char bpath[112];

                snprintf(bpath, sizeof(bpath), "%s/state", nf->backend);
                xs_watch(bpath, "netfront");
                if (on_added)
                    on_added(nf);
            }
        }
    }
    busy = false;
}

void netfront_init_all(netfront_rx_fn rx, void (*added)(struct netfront *nf))
{
    default_rx = rx;
    on_added = added;
    if (!xs_ready())
        return;
    rescan(NULL, NULL);
    xs_watch_callback("device/vif", "netfront", rescan);
}
