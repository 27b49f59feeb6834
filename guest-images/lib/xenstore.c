/*
 * XenStore client over the shared ring (see xenstore.h).
 *
 * Requests are written to req[] (waiting for space if the ring is full),
 * then we wait, blocked, for the reply with our req_id.  Whatever else
 * arrives on rsp[] meanwhile -- watch events -- is queued.  The store
 * event channel handler only raises deferred work, which drains the ring
 * and runs the watch callbacks outside the upcall.
 */
#include "clock.h"
#include "console.h"
#include "events.h"
#include "hypercall.h"
#include "mm.h"
#include "sched.h"
#include "setup.h"
#include "string.h"
#include "work.h"
#include "xenstore.h"

#define REPLY_TIMEOUT_NS    (10 * NSEC_PER_SEC)
#define MAX_EVENTS          16
#define MAX_CALLBACKS       8
#define PATH_MAX_LEN        128
#define TOKEN_MAX_LEN       32

#define XEN_ENODEV          19
#define XEN_E2BIG           7

static struct xenstore_domain_interface *ring;
static evtchn_port_t store_port;
static uint32_t next_req_id = 1;
static struct work xs_work;

/* The message being assembled from rsp[]. */
static struct xsd_sockmsg in_hdr;
static char in_payload[XENSTORE_PAYLOAD_MAX + 1];
static size_t in_have;

struct watch_event {
    char path[PATH_MAX_LEN];
    char token[TOKEN_MAX_LEN];
};
static struct watch_event events[MAX_EVENTS];
static unsigned int nr_events, events_dropped;

static struct {
    char token[TOKEN_MAX_LEN];
    xs_watch_cb cb;
} callbacks[MAX_CALLBACKS];

static const struct {
    const char *name;
    int err;
} errors[] = {
    { "EINVAL", 22 }, { "EACCES", 13 }, { "EEXIST", 17 }, { "EISDIR", 21 },
    { "ENOENT", 2 }, { "ENOMEM", 12 }, { "ENOSPC", 28 }, { "EIO", 5 },
    { "ENOTEMPTY", 39 }, { "ENOSYS", 38 }, { "EROFS", 30 }, { "EBUSY", 16 },
    { "EAGAIN", 11 }, { "EISCONN", 106 }, { "E2BIG", 7 }, { "EPERM", 1 },
    { "ETIMEDOUT", XS_ETIMEDOUT }, { "ENODEV", XEN_ENODEV },
};

const char *xs_strerror(int err)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(errors); i++)
        if (errors[i].err == -err)
            return errors[i].name;
    return "EIO";
}

static int error_from_name(const char *name)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(errors); i++)
        if (strcmp(errors[i].name, name) == 0)
            return -errors[i].err;
    return -5;
}

static void copy_string(char *dst, const char *src, size_t size)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void store_event(evtchn_port_t port, void *data)
{
    (void)port;
    (void)data;
    work_raise(&xs_work);
}

/* ---- the two byte streams ---- */
static size_t rsp_read(void *dst, size_t n)
{
    XENSTORE_RING_IDX cons = ring->rsp_cons;           /* only we write it */
    XENSTORE_RING_IDX prod = READ_ONCE(ring->rsp_prod);
    size_t avail, i;

    rmb();          /* the index before the bytes it covers */
    avail = prod - cons;
    if (avail > XENSTORE_RING_SIZE)
        avail = 0;  /* broken indices: xenstored will flag the error */
    if (avail > n)
        avail = n;
    for (i = 0; i < avail; i++)
        ((char *)dst)[i] = ring->rsp[(cons + i) & (XENSTORE_RING_SIZE - 1)];
    mb();           /* finish reading before freeing the slots */
    WRITE_ONCE(ring->rsp_cons, cons + avail);
    return avail;
}

/* Wait (events masked on entry and exit) for any event, or the deadline. */
static bool wait_event_until(uint64_t deadline)
{
    if (deadline && system_time_ns() >= deadline)
        return false;
    block();
    local_irq_disable();
    return true;
}

static void req_write(const char *data, size_t len)
{
    while (len) {
        XENSTORE_RING_IDX cons = READ_ONCE(ring->req_cons);
        XENSTORE_RING_IDX prod = ring->req_prod;
        size_t space, chunk, i;

        mb();       /* read req_cons before reusing what it frees */
        space = XENSTORE_RING_SIZE - (prod - cons);
        if (space == 0 || space > XENSTORE_RING_SIZE) {
            unsigned long flags = local_irq_save();

            evtchn_send(store_port);
            wait_event_until(0);
            local_irq_restore(flags);
            continue;
        }
        chunk = len < space ? len : space;
        for (i = 0; i < chunk; i++)
            ring->req[(prod + i) & (XENSTORE_RING_SIZE - 1)] = data[i];
        wmb();      /* the bytes before the index that publishes them */
        WRITE_ONCE(ring->req_prod, prod + chunk);
        data += chunk;
        len -= chunk;
    }
}

/* Continue assembling the incoming message; true once it is complete. */
static bool read_message(void)
{
    size_t want;

    if (in_have < sizeof(in_hdr)) {
        in_have += rsp_read((char *)&in_hdr + in_have, sizeof(in_hdr) - in_have);
        if (in_have < sizeof(in_hdr))
            return false;
        if (in_hdr.len > XENSTORE_PAYLOAD_MAX) {
            printk("xenstore: reply of %u bytes: ring out of step\n", in_hdr.len);
            in_have = 0;
            return false;
        }
    }
    want = sizeof(in_hdr) + in_hdr.len;
    if (in_have < want)
        in_have += rsp_read(in_payload + (in_have - sizeof(in_hdr)), want - in_have);
    if (in_have < want)
        return false;
    in_payload[in_hdr.len] = '\0';
    in_have = 0;
    evtchn_send(store_port);    /* we freed rsp[] space */
    return true;
}

static void queue_event(void)
{
    const char *path = in_payload;
    const char *token = path + strnlen(path, in_hdr.len) + 1;
    struct watch_event *e;

    if ((size_t)(token - in_payload) > in_hdr.len)
        token = "";
    if (nr_events == MAX_EVENTS) {
        memmove(&events[0], &events[1], sizeof(events[0]) * (MAX_EVENTS - 1));
        nr_events--;
        if (!events_dropped++)
            printk("xenstore: watch event queue full, dropping the oldest\n");
    }
    e = &events[nr_events++];
    copy_string(e->path, path, sizeof(e->path));
    copy_string(e->token, token, sizeof(e->token));
}

/* Everything complete on rsp[] that is not a reply we wait for. */
static void drain_async(void)
{
    while (read_message())
        if (in_hdr.type == XS_WATCH_EVENT)
            queue_event();
}

static int take_event(const char *token, char *path, size_t size)
{
    unsigned int i;

    for (i = 0; i < nr_events; i++) {
        if (!token || strcmp(events[i].token, token) == 0) {
            if (path)
                copy_string(path, events[i].path, size);
            memmove(&events[i], &events[i + 1], sizeof(events[0]) * (nr_events - i - 1));
            nr_events--;
            return 1;
        }
    }
    return 0;
}

/* Deferred work: drain the ring, run the callbacks of queued events. */
static void xs_poll(void *data)
{
    unsigned long flags;
    unsigned int i;
    char path[PATH_MAX_LEN];

    (void)data;
    flags = local_irq_save();
    drain_async();
    local_irq_restore(flags);
    for (i = 0; i < MAX_CALLBACKS; i++) {
        if (!callbacks[i].cb)
            continue;
        while (take_event(callbacks[i].token, path, sizeof(path)))
            callbacks[i].cb(path, callbacks[i].token);
    }
}

/* ---- requests ---- */
static int xs_talk(xs_transaction_t t, uint32_t type, const char *const *parts,
                   const size_t *lens, unsigned int nparts,
                   char *reply, size_t size, size_t *reply_len)
{
    struct xsd_sockmsg hdr = { .type = type, .tx_id = t };
    unsigned long flags;
    uint64_t deadline;
    unsigned int i;
    size_t n;

    if (!ring)
        return -XEN_ENODEV;
    for (i = 0; i < nparts; i++)
        hdr.len += lens[i];
    if (hdr.len > XENSTORE_PAYLOAD_MAX)
        return -XEN_E2BIG;
    hdr.req_id = next_req_id++;

    req_write((const char *)&hdr, sizeof(hdr));
    for (i = 0; i < nparts; i++)
        req_write(parts[i], lens[i]);
    evtchn_send(store_port);

    deadline = system_time_ns() + REPLY_TIMEOUT_NS;
    flags = local_irq_save();
    for (;;) {
        if (read_message()) {
            if (in_hdr.type == XS_WATCH_EVENT) {
                queue_event();
                continue;
            }
            if (in_hdr.req_id == hdr.req_id)
                break;
            continue;           /* a stale reply (an earlier timeout) */
        }
        if (!wait_event_until(deadline)) {
            local_irq_restore(flags);
            return -XS_ETIMEDOUT;
        }
    }
    local_irq_restore(flags);
    if (nr_events)
        work_raise(&xs_work);   /* watch events came with the reply */

    if (in_hdr.type == XS_ERROR)
        return error_from_name(in_payload);
    n = in_hdr.len;
    if (reply_len)
        *reply_len = n;
    if (reply && size) {
        if (n >= size)
            n = size - 1;
        memcpy(reply, in_payload, n);
        reply[n] = '\0';
    }
    return 0;
}

/* path NUL [value] as the payload of a request */
static int talk_path(xs_transaction_t t, uint32_t type, const char *path,
                     const char *value, size_t vlen, char *reply, size_t size,
                     size_t *reply_len)
{
    const char *parts[2] = { path, value };
    size_t lens[2] = { strlen(path) + 1, vlen };

    return xs_talk(t, type, parts, lens, value ? 2 : 1, reply, size, reply_len);
}

int xs_init(void)
{
    unsigned long pfn;

    if (start_info->flags & SIF_INITDOMAIN)
        return -XEN_ENODEV;
    pfn = mfn_to_pfn(start_info->store_mfn);
    if (pfn >= start_info->nr_pages)
        return -XEN_ENODEV;
    ring = pfn_to_virt(pfn);
    store_port = start_info->store_evtchn;
    work_init(&xs_work, xs_poll, NULL);
    evtchn_set_handler(store_port, store_event, NULL);
    evtchn_unmask(store_port);
    return 0;
}

bool xs_ready(void)
{
    return ring != NULL;
}

int xs_read(xs_transaction_t t, const char *path, char *buf, size_t size)
{
    size_t len = 0;
    int rc = talk_path(t, XS_READ, path, NULL, 0, buf, size, &len);

    return rc ? rc : (int)(len < size ? len : size - 1);
}

int xs_write(xs_transaction_t t, const char *path, const char *value)
{
    return talk_path(t, XS_WRITE, path, value, strlen(value), NULL, 0, NULL);
}

int xs_rm(xs_transaction_t t, const char *path)
{
    return talk_path(t, XS_RM, path, NULL, 0, NULL, 0, NULL);
}

int xs_directory(xs_transaction_t t, const char *path, char *buf, size_t size)
{
    size_t len = 0;
    int rc = talk_path(t, XS_DIRECTORY, path, NULL, 0, buf, size, &len);

    return rc ? rc : (int)(len < size ? len : size - 1);
}

int xs_transaction_start(xs_transaction_t *t)
{
    char id[16];
    const char *p;
    uint32_t v = 0;
    int rc = talk_path(XBT_NULL, XS_TRANSACTION_START, "", NULL, 0, id, sizeof(id), NULL);

    if (rc)
        return rc;
    for (p = id; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (uint32_t)(*p - '0');
    *t = v;
    return 0;
}

int xs_transaction_end(xs_transaction_t t, bool abort)
{
    return talk_path(t, XS_TRANSACTION_END, abort ? "F" : "T", NULL, 0, NULL, 0, NULL);
}

int xs_watch(const char *path, const char *token)
{
    return talk_path(XBT_NULL, XS_WATCH, path, token, strlen(token) + 1, NULL, 0, NULL);
}

int xs_unwatch(const char *path, const char *token)
{
    int rc = talk_path(XBT_NULL, XS_UNWATCH, path, token, strlen(token) + 1, NULL, 0, NULL);

    while (take_event(token, NULL, 0))
        ;           /* what is still queued for it is stale now */
    return rc;
}

bool xs_read_watch(const char *token, char *path, size_t size, uint64_t deadline)
{
    unsigned long flags;
    bool got;

    for (;;) {
        flags = local_irq_save();
        drain_async();
        got = take_event(token, path, size);
        if (got || work_pending() || !wait_event_until(deadline)) {
            local_irq_restore(flags);
            if (got)
                return true;
            if (!work_pending())
                return false;   /* the deadline passed */
            work_run();         /* e.g. a control/shutdown request */
            continue;
        }
        local_irq_restore(flags);
    }
}

int xs_watch_callback(const char *path, const char *token, xs_watch_cb cb)
{
    unsigned int i;

    for (i = 0; i < MAX_CALLBACKS; i++) {
        if (!callbacks[i].cb) {
            copy_string(callbacks[i].token, token, sizeof(callbacks[i].token));
            callbacks[i].cb = cb;
            return xs_watch(path, token);
        }
    }
    return -28;     /* ENOSPC */
}
