/*
 * blkfront (see blkfront.h).
 *
 * Uniprocessor: the ring's response side is touched by the event handler
 * (upcall, events masked) and by the waiting code with events masked.
 * Hot plug follows the toolstack: a new device/vbd/N is connected by a
 * XenStore watch callback (deferred work); a back end that goes to
 * Closing (block-detach) makes us close as Linux does: Closing, wait for
 * the back end's Closing, end our grants, Closed.
 */
#include "blkfront.h"
#include "clock.h"
#include "console.h"
#include "events.h"
#include "interdomain.h"
#include "mm.h"
#include "printf.h"
#include "sched.h"
#include "string.h"
#include "xenstore.h"

#define XenbusStateInitialising 1
#define XenbusStateInitWait     2
#define XenbusStateInitialised  3
#define XenbusStateConnected    4
#define XenbusStateClosing      5
#define XenbusStateClosed       6

#define STATE_TIMEOUT   (10 * NSEC_PER_SEC)
#define IO_TIMEOUT      (30 * NSEC_PER_SEC)
#define ERR_TIMEOUT     (-110)
#define ERR_NOTCONN     (-105)
#define SEGS_PER_INDIRECT_PAGE  (PAGE_SIZE / sizeof(struct blkif_request_segment))
#define RING_PAGES      (1 << BLK_RING_ORDER_MAX)

static uint8_t ring_mem[BLK_MAX_DEVS][RING_PAGES][PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t indirect_mem[BLK_MAX_DEVS][PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t pool[BLK_POOL_PAGES][PAGE_SIZE] __aligned(PAGE_SIZE);
static grant_ref_t pool_ref[BLK_POOL_PAGES];
static bool pool_granted;
static struct blkfront devs[BLK_MAX_DEVS];
static void (*on_added)(struct blkfront *bf);
static bool busy;

struct blkfront *blkfront_get(unsigned int index)
{
    if (index >= BLK_MAX_DEVS || !devs[index].used)
        return NULL;
    return &devs[index];
}

static struct blkfront *by_devid(unsigned int devid)
{
    unsigned int i;

    for (i = 0; i < BLK_MAX_DEVS; i++)
        if (devs[i].used && devs[i].devid == devid)
            return &devs[i];
    return NULL;
}

static long parse_ulong(const char *s)
{
    long v = 0;

    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (*s - '0');
    return *s ? -1 : v;
}

struct blkfront *blkfront_find(const char *name)
{
    unsigned int i;
    long id = parse_ulong(name);

    for (i = 0; i < BLK_MAX_DEVS; i++)
        if (devs[i].used && (strcmp(devs[i].name, name) == 0 ||
                             (id >= 0 && devs[i].devid == (unsigned long)id)))
            return &devs[i];
    return NULL;
}

uint8_t *blkfront_buffer(unsigned int page)
{
    return pool[page % BLK_POOL_PAGES];
}

grant_ref_t blkfront_pool_ref(unsigned int page)
{
    return pool_ref[page % BLK_POOL_PAGES];
}

/* ---- XenStore ---- */
static int read_key(const struct blkfront *bf, bool backend, const char *key,
                    char *buf, size_t size)
{
    char path[160];

    snprintf(path, sizeof(path), "%s/%s", backend ? bf->backend : bf->nodename, key);
    return xs_read(XBT_NULL, path, buf, size);
}

static long read_int(const struct blkfront *bf, bool backend, const char *key)
{
    char buf[24];

    if (read_key(bf, backend, key, buf, sizeof(buf)) < 0)
        return -1;
    return parse_ulong(buf);
}

static uint64_t read_u64(const struct blkfront *bf, const char *key)
{
    char buf[24], *s;
    uint64_t v = 0;

    if (read_key(bf, true, key, buf, sizeof(buf)) < 0)
        return 0;
    for (s = buf; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

static int switch_state(struct blkfront *bf, int state)
{
    char path[48], val[4];

    snprintf(path, sizeof(path), "%s/state", bf->nodename);
    snprintf(val, sizeof(val), "%d", state);
    return xs_write(XBT_NULL, path, val);
}

/* Poll the back end's state until it is in [lo, hi] (or the deadline). */
static long wait_backend_state(struct blkfront *bf, long lo, long hi)
{
    uint64_t now = system_time_ns(), deadline = now + STATE_TIMEOUT, closed_since = 0;
    char err[8];
    long st;

    for (;;) {
        st = read_int(bf, true, "state");
        now = system_time_ns();
        if ((st >= lo && st <= hi) || now > deadline)
            return st;
        if (st < 0 && lo >= XenbusStateClosing)
            return st;                      /* the back end is gone */
        if (st >= XenbusStateClosing && lo < XenbusStateClosing) {
            /* Waiting for InitWait, a closed back end has not yet seen
             * our Initialising (after a close): wait for it.  Later, it
             * refused us (an error node says why) or went away. */
            if (lo > XenbusStateInitWait &&
                read_key(bf, true, "error", err, sizeof(err)) >= 0)
                return st;
            if (!closed_since)
                closed_since = now;
            else if (lo > XenbusStateInitWait && now - closed_since > 200 * 1000000ULL)
                return st;
        } else {
            closed_since = 0;
        }
        sleep_ms(2);
    }
}

long blkfront_backend_state(struct blkfront *bf, char *error, size_t size)
{
    if (error && size) {
        error[0] = '\0';
        if (read_key(bf, true, "error", error, size) < 0)
            error[0] = '\0';
    }
    return read_int(bf, true, "state");
}

/* ---- the ring ---- */
static void responses(struct blkfront *bf)
{
    struct blkif_sring *s = bf->sring;
    RING_IDX rp, cons;

    if (!s)
        return;
again:
    rp = READ_ONCE(s->rsp_prod);
    rmb();                                  /* the responses after the index */
    if ((RING_IDX)(rp - bf->rsp_cons) > bf->ring_size) {
        bf->broken = true;                  /* a broken back end: stop reading */
        return;
    }
    for (cons = bf->rsp_cons; cons != rp; cons++) {
        const struct blkif_response *r = &s->ring[cons & (bf->ring_size - 1)].rsp;
        uint64_t id = READ_ONCE(r->id);

        if (id < bf->ring_size && bf->shadow[id].busy && !bf->shadow[id].done) {
            bf->shadow[id].status = READ_ONCE(r->status);
            bf->shadow[id].done = true;
        }
    }
    bf->rsp_cons = cons;
    WRITE_ONCE(s->rsp_event, cons + 1);     /* RING_FINAL_CHECK_FOR_RESPONSES */
    mb();
    if (READ_ONCE(s->rsp_prod) != cons)
        goto again;
}

static void blk_event(evtchn_port_t port, void *data)
{
    (void)port;
    responses((struct blkfront *)data);
}

/* A free shadow slot (its index is the request id), or -1. */
static int get_slot(struct blkfront *bf)
{
    unsigned int i;

    for (i = 0; i < bf->ring_size; i++)
        if (!bf->shadow[i].busy) {
            bf->shadow[i].busy = true;
            bf->shadow[i].done = false;
            bf->shadow[i].status = 0;
            return (int)i;
        }
    return -1;
}

/* A place for the next request on the ring (the caller fills it). */
static union blkif_entry *next_entry(struct blkfront *bf)
{
    return &bf->sring->ring[bf->req_prod_pvt++ & (bf->ring_size - 1)];
}

static void push(struct blkfront *bf)
{
    struct blkif_sring *s = bf->sring;
    RING_IDX old = s->req_prod, new = bf->req_prod_pvt;

    wmb();                                  /* the requests before the index */
    WRITE_ONCE(s->req_prod, new);
    mb();                                   /* the index before reading req_event */
    if ((RING_IDX)(new - READ_ONCE(s->req_event)) < (RING_IDX)(new - old))
        evtchn_send(bf->port);
}

/* Wait for the slots in ids[0..n) to complete; the worst status. */
static int wait_slots(struct blkfront *bf, const int *ids, unsigned int n)
{
    uint64_t deadline = system_time_ns() + IO_TIMEOUT;
    unsigned long flags = local_irq_save();
    int worst = BLKIF_RSP_OKAY;
    unsigned int i;
    bool all;

    for (;;) {
        responses(bf);
        all = true;
        for (i = 0; i < n; i++)
            if (!bf->shadow[ids[i]].done)
                all = false;
        if (all || bf->broken || !bf->connected || system_time_ns() > deadline)
            break;
        block();
        local_irq_disable();
    }
    for (i = 0; i < n; i++) {
        int st = bf->shadow[ids[i]].done ? bf->shadow[ids[i]].status : ERR_TIMEOUT;

        if (st != BLKIF_RSP_OKAY) {
            bf->stats.errors++;
            if (worst == BLKIF_RSP_OKAY || st < worst)
                worst = st;
        }
        /* a request that never completed keeps its slot: the back end may still answer */
        if (bf->shadow[ids[i]].done)
            bf->shadow[ids[i]].busy = false;
    }
    local_irq_restore(flags);
    return worst;
}

/* ---- I/O ---- */
int blkfront_rw(struct blkfront *bf, bool write, uint64_t sector, unsigned int nsect,
                unsigned int first_page)
{
    int ids[BLK_MAX_RING];
    unsigned int nids = 0, page = first_page, per_req, left = nsect;
    unsigned long flags;

    if (!bf || !bf->connected || bf->broken)
        return ERR_NOTCONN;
    if (nsect == 0 || first_page >= BLK_POOL_PAGES ||
        nsect > (BLK_POOL_PAGES - first_page) * (PAGE_SIZE / BLK_SECTOR))
        return BLKIF_RSP_ERROR;
    per_req = BLKIF_MAX_SEGMENTS_PER_REQUEST;
    if (bf->use_indirect && bf->max_indirect > per_req) {
        per_req = bf->max_indirect;
        if (per_req > BLK_POOL_PAGES)
            per_req = BLK_POOL_PAGES;
    }
    flags = local_irq_save();
    while (left) {
        unsigned int npages = (left + 7) / 8, i;
        int id = get_slot(bf);
        union blkif_entry *e;
        struct blkif_request_segment *segs;

        if (id < 0)
            break;                      /* cannot happen: a transfer fits the ring */
        if (npages > per_req)
            npages = per_req;
        e = next_entry(bf);
        if (npages > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
            struct blkif_request_indirect *r = &e->indirect;

            memset(r, 0, sizeof(*r));
            r->operation = BLKIF_OP_INDIRECT;
            r->indirect_op = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
            r->nr_segments = (uint16_t)npages;
            r->id = (uint64_t)id;
            r->sector_number = sector;
            r->handle = (uint16_t)bf->devid;
            r->indirect_grefs[0] = bf->indirect_ref;
            segs = bf->indirect_page;   /* one request in flight uses it */
        } else {
            struct blkif_request *r = &e->req;

            r->operation = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
            r->nr_segments = (uint8_t)npages;
            r->handle = (uint16_t)bf->devid;
            r->id = (uint64_t)id;
            r->sector_number = sector;
            segs = r->seg;
        }
        for (i = 0; i < npages; i++) {
            unsigned int n = left > 8 ? 8 : left;

            segs[i].gref = pool_ref[page];
            segs[i].first_sect = 0;
            segs[i].last_sect = (uint8_t)(n - 1);
            left -= n;
            sector += n;
            page++;
        }
        ids[nids++] = id;
        bf->stats.requests++;
        if (write)
            bf->stats.write_bytes += (uint64_t)npages * PAGE_SIZE;
        else
            bf->stats.read_bytes += (uint64_t)npages * PAGE_SIZE;
        if (npages > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
            /* the indirect page is ours again only after this completes */
            int st;

            push(bf);
            local_irq_restore(flags);
            st = wait_slots(bf, ids, nids);
            if (st != BLKIF_RSP_OKAY)
                return st;
            nids = 0;
            flags = local_irq_save();
        }
    }
    push(bf);
    local_irq_restore(flags);
    return nids ? wait_slots(bf, ids, nids) : BLKIF_RSP_OKAY;
}

static int simple_request(struct blkfront *bf, uint8_t op, uint64_t sector,
                          uint64_t nsect, uint8_t flag)
{
    unsigned long flags;
    union blkif_entry *e;
    int id;

    if (!bf || !bf->connected || bf->broken)
        return ERR_NOTCONN;
    flags = local_irq_save();
    id = get_slot(bf);
    if (id < 0) {
        local_irq_restore(flags);
        return BLKIF_RSP_ERROR;
    }
    e = next_entry(bf);
    memset(e, 0, sizeof(*e));
    if (op == BLKIF_OP_DISCARD) {
        e->discard.operation = op;
        e->discard.flag = flag;
        e->discard.handle = (uint16_t)bf->devid;
        e->discard.id = (uint64_t)id;
        e->discard.sector_number = sector;
        e->discard.nr_sectors = nsect;
    } else {
        e->req.operation = op;
        e->req.nr_segments = 0;
        e->req.handle = (uint16_t)bf->devid;
        e->req.id = (uint64_t)id;
        e->req.sector_number = sector;
    }
    bf->stats.requests++;
    push(bf);
    local_irq_restore(flags);
    return wait_slots(bf, &id, 1);
}

int blkfront_flush(struct blkfront *bf, bool barrier)
{
    return simple_request(bf, barrier ? BLKIF_OP_WRITE_BARRIER : BLKIF_OP_FLUSH_DISKCACHE,
                          0, 0, 0);
}

int blkfront_discard(struct blkfront *bf, uint64_t sector, uint64_t nsect, bool secure)
{
    return simple_request(bf, BLKIF_OP_DISCARD, sector, nsect,
                          secure ? BLKIF_DISCARD_SECURE : 0);
}

int blkfront_raw_request(struct blkfront *bf, const union blkif_entry *req)
{
    unsigned long flags;
    union blkif_entry *e;
    int id;

    if (!bf || !bf->connected || bf->broken)
        return ERR_NOTCONN;
    flags = local_irq_save();
    id = get_slot(bf);
    if (id < 0) {
        local_irq_restore(flags);
        return BLKIF_RSP_ERROR;
    }
    e = next_entry(bf);
    *e = *req;
    e->req.id = (uint64_t)id;           /* id is at 4 in every layout */
    bf->stats.requests++;
    push(bf);
    local_irq_restore(flags);
    return wait_slots(bf, &id, 1);
}

void blkfront_garbage_index(struct blkfront *bf, RING_IDX ahead)
{
    if (!bf || !bf->sring)
        return;
    WRITE_ONCE(bf->sring->req_prod, bf->rsp_cons + ahead);
    mb();
    evtchn_send(bf->port);
}

/* ---- connect and disconnect ---- */
static int grant_pool(void)
{
    unsigned int i;

    if (pool_granted)
        return 0;
    for (i = 0; i < BLK_POOL_PAGES; i++) {
        int ref = gnttab_grant_access(0, virt_to_mfn(pool[i]), false);

        if (ref < 0)
            return ref;
        pool_ref[i] = (grant_ref_t)ref;
    }
    pool_granted = true;
    return 0;
}

static void release(struct blkfront *bf)
{
    unsigned int i;

    if (bf->port) {
        evtchn_set_handler(bf->port, NULL, NULL);
        evtchn_close(bf->port);
        bf->port = 0;
    }
    for (i = 0; i < (1U << bf->ring_order); i++)
        if (bf->ring_ref[i]) {
            gnttab_end_access(bf->ring_ref[i]);
            bf->ring_ref[i] = 0;
        }
    if (bf->indirect_ref) {
        gnttab_end_access(bf->indirect_ref);
        bf->indirect_ref = 0;
    }
    bf->sring = NULL;
}

static int publish(struct blkfront *bf)
{
    char path[96], val[16];
    xs_transaction_t t;
    unsigned int i;
    int rc;

again:
    if ((rc = xs_transaction_start(&t)))
        return rc;
    /* what an earlier connection wrote must not be read with this one */
    snprintf(path, sizeof(path), "%s/ring-ref", bf->nodename);
    xs_rm(t, path);
    snprintf(path, sizeof(path), "%s/ring-page-order", bf->nodename);
    xs_rm(t, path);
    for (i = 0; i < (1U << BLK_RING_ORDER_MAX); i++) {
        snprintf(path, sizeof(path), "%s/ring-ref%u", bf->nodename, i);
        xs_rm(t, path);
    }
    if (bf->ring_order == 0) {
        snprintf(path, sizeof(path), "%s/ring-ref", bf->nodename);
        snprintf(val, sizeof(val), "%u", bf->ring_ref[0]);
        if ((rc = xs_write(t, path, val)))
            goto abort;
    } else {
        snprintf(path, sizeof(path), "%s/ring-page-order", bf->nodename);
        snprintf(val, sizeof(val), "%u", bf->ring_order);
        if ((rc = xs_write(t, path, val)))
            goto abort;
        for (i = 0; i < (1U << bf->ring_order); i++) {
            snprintf(path, sizeof(path), "%s/ring-ref%u", bf->nodename, i);
            snprintf(val, sizeof(val), "%u", bf->ring_ref[i]);
            if ((rc = xs_write(t, path, val)))
                goto abort;
        }
    }
    snprintf(path, sizeof(path), "%s/event-channel", bf->nodename);
    snprintf(val, sizeof(val), "%u", bf->port);
    if ((rc = xs_write(t, path, val)))
        goto abort;
    snprintf(path, sizeof(path), "%s/protocol", bf->nodename);
    if ((rc = xs_write(t, path, "x86_32-abi")))
        goto abort;
    /* our data pages are granted once and reused: the back end may keep them mapped */
    snprintf(path, sizeof(path), "%s/feature-persistent", bf->nodename);
    if ((rc = xs_write(t, path, bf->no_persistent ? "0" : "1")))
        goto abort;
    snprintf(path, sizeof(path), "%s/state", bf->nodename);
    snprintf(val, sizeof(val), "%d", XenbusStateInitialised);
    if ((rc = xs_write(t, path, val)))
        goto abort;
    rc = xs_transaction_end(t, false);
    if (rc == -11)          /* EAGAIN: redo the transaction */
        goto again;
    return rc;
abort:
    xs_transaction_end(t, true);
    return rc;
}

static int do_connect(struct blkfront *bf, unsigned int slot, int order)
{
    char err[128];
    long st, v, port;
    unsigned int i, max_order;
    int rc;

    st = wait_backend_state(bf, XenbusStateInitWait, XenbusStateInitWait);
    if (st != XenbusStateInitWait) {
        printk("blkfront: %s: back end %s is in state %ld, not InitWait\n",
               bf->name, bf->backend, st);
        return -19;
    }
    v = read_int(bf, true, "max-ring-page-order");
    max_order = v > 0 ? (unsigned int)v : 0;
    if (max_order > BLK_RING_ORDER_MAX)
        max_order = BLK_RING_ORDER_MAX;
    bf->ring_order = order < 0 ? max_order :
                     ((unsigned int)order > max_order ? max_order : (unsigned int)order);
    bf->ring_size = 1;
    while (64 + bf->ring_size * 2 * sizeof(union blkif_entry) <= (PAGE_SIZE << bf->ring_order))
        bf->ring_size *= 2;
    if (bf->ring_size > BLK_MAX_RING)
        bf->ring_size = BLK_MAX_RING;

    port = evtchn_alloc_unbound(bf->backend_id);
    if (port < 0)
        return (int)port;
    bf->port = (evtchn_port_t)port;
    memset(ring_mem[slot], 0, sizeof(ring_mem[slot]));
    bf->sring = (struct blkif_sring *)ring_mem[slot];
    bf->sring->req_event = bf->sring->rsp_event = 1;        /* SHARED_RING_INIT */
    bf->req_prod_pvt = bf->rsp_cons = 0;
    memset(bf->shadow, 0, sizeof(bf->shadow));
    for (i = 0; i < (1U << bf->ring_order); i++) {
        int ref = gnttab_grant_access(bf->backend_id, virt_to_mfn(ring_mem[slot][i]), false);

        if (ref < 0)
            return ref;
        bf->ring_ref[i] = (grant_ref_t)ref;
    }
    bf->indirect_page = indirect_mem[slot];
    rc = gnttab_grant_access(bf->backend_id, virt_to_mfn(indirect_mem[slot]), true);
    if (rc < 0)
        return rc;
    bf->indirect_ref = (grant_ref_t)rc;
    evtchn_set_handler(bf->port, blk_event, bf);
    if ((rc = publish(bf))) {
        printk("blkfront: %s: XenStore: %s\n", bf->name, xs_strerror(rc));
        return rc;
    }
    st = wait_backend_state(bf, XenbusStateConnected, XenbusStateConnected);
    if (st != XenbusStateConnected) {
        blkfront_backend_state(bf, err, sizeof(err));
        printk("blkfront: %s: back end did not connect (state %ld%s%s)\n", bf->name, st,
               err[0] ? ": " : "", err);
        return -19;
    }
    bf->sectors = read_u64(bf, "sectors");
    v = read_int(bf, true, "sector-size");
    bf->sector_size = v > 0 ? (unsigned int)v : BLK_SECTOR;
    v = read_int(bf, true, "info");
    bf->info = v > 0 ? (unsigned int)v : 0;
    bf->readonly = (bf->info & VDISK_READONLY) != 0;
    if (read_key(bf, true, "mode", err, sizeof(err)) >= 0 && err[0] == 'r')
        bf->readonly = true;
    bf->feature_flush = read_int(bf, true, "feature-flush-cache") == 1;
    bf->feature_barrier = read_int(bf, true, "feature-barrier") == 1;
    bf->feature_discard = read_int(bf, true, "feature-discard") == 1;
    v = read_int(bf, true, "feature-max-indirect-segments");
    bf->max_indirect = v > BLKIF_MAX_SEGMENTS_PER_REQUEST ? (unsigned int)v : 0;
    if (bf->max_indirect > SEGS_PER_INDIRECT_PAGE)
        bf->max_indirect = SEGS_PER_INDIRECT_PAGE;   /* we use one indirect page */
    bf->use_indirect = bf->max_indirect != 0;
    bf->persistent = !bf->no_persistent && read_int(bf, true, "feature-persistent") == 1;
    bf->broken = false;
    bf->connected = true;
    switch_state(bf, XenbusStateConnected);
    evtchn_unmask(bf->port);
    printk("blkfront: %s (%u) connected: %llu sectors of %u bytes, %s, ring %u page(s), "
           "indirect %u, flush %d, barrier %d, discard %d, persistent %d\n",
           bf->name, bf->devid, bf->sectors, bf->sector_size, bf->readonly ? "ro" : "rw",
           1U << bf->ring_order, bf->max_indirect, bf->feature_flush, bf->feature_barrier,
           bf->feature_discard, bf->persistent);
    return 0;
}

int blkfront_connect(unsigned int devid, int order)
{
    struct blkfront *bf = NULL;
    unsigned int slot;
    long st;
    int rc;

    if (by_devid(devid))
        return 0;
    for (slot = 0; slot < BLK_MAX_DEVS; slot++)
        if (!devs[slot].used) {
            bf = &devs[slot];
            break;
        }
    if (!bf) {
        printk("blkfront: vbd %u: no room (at most %u disks)\n", devid, BLK_MAX_DEVS);
        return -28;
    }
    memset(bf, 0, sizeof(*bf));
    bf->devid = devid;
    snprintf(bf->nodename, sizeof(bf->nodename), "device/vbd/%u", devid);
    snprintf(bf->name, sizeof(bf->name), "%u", devid);
    if ((st = read_int(bf, false, "backend-id")) < 0 ||
        read_key(bf, false, "backend", bf->backend, sizeof(bf->backend)) < 0)
        return -2;                          /* not (yet) complete: ENOENT */
    bf->backend_id = (domid_t)st;
    if (bf->backend_id != 0) {
        printk("blkfront: vbd %u: back end in domain %u (only domain 0 is supported)\n",
               devid, bf->backend_id);
        return -95;
    }
    if (read_key(bf, true, "dev", bf->name, sizeof(bf->name)) < 0)
        snprintf(bf->name, sizeof(bf->name), "%u", devid);
    if ((rc = grant_pool())) {
        printk("blkfront: cannot grant the buffer pool (%d)\n", rc);
        return rc;
    }
    bf->used = true;
    rc = do_connect(bf, slot, order);
    if (rc) {
        release(bf);
        switch_state(bf, XenbusStateClosed);
        bf->used = false;
    }
    return rc;
}

void blkfront_disconnect(struct blkfront *bf)
{
    unsigned long flags;

    if (!bf->used || !bf->sring)
        return;
    flags = local_irq_save();
    bf->connected = false;
    local_irq_restore(flags);
    switch_state(bf, XenbusStateClosing);
    wait_backend_state(bf, XenbusStateClosing, XenbusStateClosed);
    release(bf);
    switch_state(bf, XenbusStateClosed);
    printk("blkfront: %s disconnected\n", bf->name);
}

int blkfront_reconnect(struct blkfront *bf, int order)
{
    long st;
    unsigned int slot = (unsigned int)(bf - devs);

    if (bf->sring)
        blkfront_disconnect(bf);
    st = wait_backend_state(bf, XenbusStateClosed, XenbusStateClosed);
    if (st != XenbusStateClosed)
        return -16;
    switch_state(bf, XenbusStateInitialising);
    return do_connect(bf, slot, order);
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
    for (i = 0; i < BLK_MAX_DEVS; i++) {
        struct blkfront *bf = &devs[i];
        long st;

        if (!bf->used)
            continue;
        st = read_int(bf, true, "state");
        if (bf->sring && (st < 0 || st >= XenbusStateClosing))
            blkfront_disconnect(bf);        /* detached, or the back end gave up on us */
        if (st < 0 && read_int(bf, false, "backend-id") < 0)
            bf->used = false;               /* removed from XenStore */
    }
    n = xs_directory(XBT_NULL, "device/vbd", list, sizeof(list));
    for (p = list; n > 0 && p < list + n; p += strlen(p) + 1) {
        long id = parse_ulong(p);
        char stpath[48], st[8];
        struct blkfront *bf;

        if (id < 0 || by_devid((unsigned int)id))
            continue;
        snprintf(stpath, sizeof(stpath), "device/vbd/%ld/state", id);
        if (xs_read(XBT_NULL, stpath, st, sizeof(st)) >= 0 &&
            parse_ulong(st) >= XenbusStateClosing)
            continue;
        if (blkfront_connect((unsigned int)id, -1) == 0 && (bf = by_devid((unsigned int)id))) {
            char bpath[112];

            snprintf(bpath, sizeof(bpath), "%s/state", bf->backend);
            xs_watch(bpath, "blkfront");
            if (on_added)
                on_added(bf);
        }
    }
    busy = false;
}

void blkfront_init_all(void (*added)(struct blkfront *bf))
{
    on_added = added;
    if (!xs_ready())
        return;
    rescan(NULL, NULL);
    xs_watch_callback("device/vbd", "blkfront", rescan);
}
