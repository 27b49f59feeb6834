/*
 * hvm-pv: a grant table and one disk through blkfront, from an HVM guest.
 *
 * The grant table is Xen's way for an HVM guest: GNTTABOP_query_size,
 * XENMEM_add_to_physmap(XENMAPSPACE_grant_table) to place frame 0 in our
 * RAM, GNTTABOP_setup_table to read back where it is.  Then the blkfront
 * handshake as Linux does it (vbd-interface, io/blkif.h): find
 * device/vbd/N, wait for the back end's InitWait, share one ring page and
 * an event channel, Initialised, wait for Connected; read sector 0, write
 * a page at sector 8 and read it back; close (Closing, the back end's
 * Closed, Closed) and end the grants.  Every pointer goes through the
 * 0xC0000000 alias, so Python walks our page tables for it.
 */
#include "hvmpv.h"
#include "blkfront.h"
#include "interdomain.h"

#define BLK_RING_SIZE   32                      /* __RING_SIZE of one blkif page */
#define REF_RING        GNTTAB_NR_RESERVED_ENTRIES
#define REF_DATA        (GNTTAB_NR_RESERVED_ENTRIES + 1)
#define XEN_EINVAL      22
#define XEN_ENOSYS      38
#define STATE_TRIES     4000

struct grant_entry_v1 gnttab_frame0[512] __attribute__((aligned(4096)));
static uint8_t ring_page[4096] __attribute__((aligned(4096)));
#define sring ((struct blkif_sring *)ring_page)
static uint8_t data[4096] __attribute__((aligned(4096)));
static char fe[32], be[96], buf[128];
static uint32_t port, handle;
static RING_IDX rsp_cons;

_Static_assert(sizeof(union blkif_entry) * BLK_RING_SIZE * 2 + sizeof(struct blkif_sring) > 4096,
               "BLK_RING_SIZE is the largest power of two that fits a page");

static int xs_read_at(const char *dir, const char *key, char *out, uint32_t n)
{
    static char path[160];
    uint32_t i = 0;
    for (const char *s = dir; *s && i < sizeof(path) - 2; s++)
        path[i++] = *s;
    path[i++] = '/';
    for (const char *s = key; *s && i < sizeof(path) - 1; s++)
        path[i++] = *s;
    path[i] = 0;
    return xs_request(XS_READ, path, 0, out, n);
}

static uint32_t to_u32(const char *s)
{
    uint32_t v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint32_t)(*s++ - '0');
    return v;
}

static const char *u32_str(uint32_t v)
{
    static char b[12];
    int n = 11;
    b[n] = 0;
    do { b[--n] = (char)('0' + v % 10); v /= 10; } while (v);
    return b + n;
}

static int xs_write_fe(const char *key, const char *value)
{
    static char path[64];
    uint32_t i = 0;
    for (const char *s = fe; *s; s++)
        path[i++] = *s;
    path[i++] = '/';
    for (const char *s = key; *s && i < sizeof(path) - 1; s++)
        path[i++] = *s;
    path[i] = 0;
    char ok[4];
    return xs_request(XS_WRITE, path, value, ok, sizeof(ok)) >= 0 ? 0 : -1;
}

static uint32_t backend_state(void)
{
    return xs_read_at(be, "state", buf, sizeof(buf)) > 0 ? to_u32(buf) : 0;
}

static int wait_backend(uint32_t lo, uint32_t hi)
{
    for (int i = 0; i < STATE_TRIES; i++) {
        uint32_t s = backend_state();
        if (s >= lo && s <= hi)
            return (int)s;
        for (int j = 0; j < 20000; j++)
            __asm__ volatile("pause");
    }
    return -1;
}

static void grant(grant_ref_t ref, void *page, int readonly)
{
    volatile struct grant_entry_v1 *e = &gnttab_frame0[ref];
    e->domid = 0;
    e->frame = (uint32_t)page >> 12;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    e->flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
}

/* gnttab_end_foreign_access_ref(): revoke unless the back end still uses it. */
static int end_grant(grant_ref_t ref)
{
    uint16_t f = gnttab_frame0[ref].flags;
    do {
        if (f & (GTF_reading | GTF_writing))
            return 0;
    } while (!__atomic_compare_exchange_n(&gnttab_frame0[ref].flags, &f, 0, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_SEQ_CST));
    return 1;
}

/* One request (with the data page as its one segment, or none); the
 * response's status, or -100 (none). */
static int blk_io(uint8_t op, uint64_t sector, int with_data)
{
    volatile struct blkif_sring *s = sring;
    RING_IDX i = s->req_prod;
    struct blkif_request *req = &sring->ring[i % BLK_RING_SIZE].req;
    req->operation = op;
    req->nr_segments = with_data ? 1 : 0;
    req->handle = (uint16_t)handle;
    req->id = 0xb10c0000u + i;
    req->sector_number = sector;
    req->seg[0].gref = REF_DATA;
    req->seg[0].first_sect = 0;
    req->seg[0].last_sect = 7;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    s->req_prod = i + 1;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    struct evtchn_send send = { port };
    hcall(HC_event_channel_op, EVTCHNOP_send, V(&send), 0);
    for (uint32_t n = 0; n < 100000000 && s->rsp_prod == rsp_cons; n++)
        __asm__ volatile("pause");
    if (s->rsp_prod == rsp_cons)
        return -100;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    struct blkif_response *rsp = &sring->ring[rsp_cons % BLK_RING_SIZE].rsp;
    int status = rsp->status;
    check(rsp->id == 0xb10c0000u + i && rsp->operation == op, "blkif response id/operation");
    rsp_cons++;
    s->rsp_event = rsp_cons + 1;
    return status;
}

void grant_table_setup(void)
{
    struct gnttab_query_size q = { DOMID_SELF, 0, 0, 0 };
    check(hcall(HC_grant_table_op, GNTTABOP_query_size, V(&q), 1) == 0 && q.status == 0,
          "GNTTABOP_query_size");
    print("hvm-pv: grant table: %u frame(s), at most %u\n", q.nr_frames, q.max_nr_frames);
    check(q.nr_frames == 1 && q.max_nr_frames >= 1, "grant table sizes");

    uint32_t gpfn = (uint32_t)gnttab_frame0 >> 12;
    struct xen_add_to_physmap x = { DOMID_SELF, 0, XENMAPSPACE_grant_table, 0, gpfn };
    check(hcall(HC_memory_op, XENMEM_add_to_physmap, V(&x), 0) == 0,
          "XENMEM_add_to_physmap(grant_table, 0)");
    static xen_pfn_t frames[1];
    struct gnttab_setup_table st = { DOMID_SELF, 1, 0, (xen_pfn_t *)V(frames) };
    check(hcall(HC_grant_table_op, GNTTABOP_setup_table, V(&st), 1) == 0 && st.status == 0,
          "GNTTABOP_setup_table");
    print("hvm-pv: grant frame 0 placed at pfn %x, setup_table says %x\n", gpfn, frames[0]);
    check(frames[0] == gpfn, "setup_table returns the frame's gpfn");

    x.idx = q.max_nr_frames;                        /* beyond the table's maximum */
    check(hcall(HC_memory_op, XENMEM_add_to_physmap, V(&x), 0) == -XEN_EINVAL,
          "add_to_physmap(grant_table, max): -EINVAL");
    x.idx = 0x80000000u;                            /* a v2 status frame */
    check(hcall(HC_memory_op, XENMEM_add_to_physmap, V(&x), 0) == -XEN_EINVAL,
          "add_to_physmap(grant status frame) on v1: -EINVAL");
    check(hcall(HC_grant_table_op, 4 /* transfer */, V(&q), 1) == -XEN_ENOSYS,
          "GNTTABOP_transfer from HVM: -ENOSYS");
}

static void disk(void)
{
    char list[64];
    if (xs_request(XS_DIRECTORY, "device/vbd", 0, list, sizeof(list)) <= 0) {
        print("hvm-pv: no PV disk (device/vbd): blkfront not tried\n");
        return;
    }
    handle = to_u32(list);                          /* the first device */
    const char *h = u32_str(handle);
    uint32_t i = 0;
    for (const char *s = "device/vbd/"; *s; s++)
        fe[i++] = *s;
    for (; *h; h++)
        fe[i++] = *h;
    fe[i] = 0;
    check(xs_read_at(fe, "backend", be, sizeof(be)) > 0, "vbd backend path");
    check(xs_read_at(fe, "backend-id", buf, sizeof(buf)) > 0 && to_u32(buf) == 0, "backend-id 0");
    print("hvm-pv: blkfront %s, back end %s\n", fe, be);
    if (wait_backend(2, 2) != 2) {                  /* XenbusStateInitWait */
        check(0, "back end in InitWait");
        return;
    }

    struct evtchn_alloc_unbound au = { DOMID_SELF, 0, 0 };
    check(hcall(HC_event_channel_op, EVTCHNOP_alloc_unbound, V(&au), 0) == 0,
          "EVTCHNOP_alloc_unbound");
    port = au.port;
    sring->req_event = sring->rsp_event = 1;        /* SHARED_RING_INIT */
    grant(REF_RING, ring_page, 0);
    grant(REF_DATA, data, 0);
    check(xs_write_fe("ring-ref", u32_str(REF_RING)) == 0, "write ring-ref");
    check(xs_write_fe("event-channel", u32_str(port)) == 0, "write event-channel");
    check(xs_write_fe("protocol", "x86_32-abi") == 0, "write protocol");
    check(xs_write_fe("state", "3") == 0, "write state Initialised");
    if (wait_backend(4, 4) != 4) {                  /* XenbusStateConnected */
        check(0, "back end Connected");
        return;
    }
    uint32_t sectors = xs_read_at(be, "sectors", buf, sizeof(buf)) > 0 ? to_u32(buf) : 0;
    uint32_t ssize = xs_read_at(be, "sector-size", buf, sizeof(buf)) > 0 ? to_u32(buf) : 0;
    print("hvm-pv: blkfront connected: %u sectors of %u bytes, event channel %u\n",
          sectors, ssize, port);
    check(sectors >= 16 && ssize == 512, "disk size");

    uint32_t cb = callbacks;
    check(blk_io(BLKIF_OP_READ, 0, 1) == BLKIF_RSP_OKAY, "read sector 0");
    check(wait_for(&callbacks, cb), "a callback for the block response");
    for (i = 0; i < 63 && data[i] >= ' ' && data[i] < 127; i++)
        buf[i] = (char)data[i];
    buf[i] = 0;
    print("hvm-pv: blk sector 0: '%s'\n", buf);

    static const char msg[] = "hvm-pv wrote this through blkfront";
    for (i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 3);
    memcpy(data, msg, sizeof(msg));
    check(blk_io(BLKIF_OP_WRITE, 8, 1) == BLKIF_RSP_OKAY, "write sectors 8-15");
    check(blk_io(BLKIF_OP_FLUSH_DISKCACHE, 0, 0) == BLKIF_RSP_OKAY, "flush");
    for (i = 0; i < sizeof(data); i++)
        data[i] = 0;
    check(blk_io(BLKIF_OP_READ, 8, 1) == BLKIF_RSP_OKAY, "read sectors 8-15 back");
    int same = memcmp(data, msg, sizeof(msg)) == 0;
    for (i = sizeof(msg); same && i < sizeof(data); i++)
        same = data[i] == (uint8_t)(i * 7 + 3);
    check(same, "the page read back is the page written");
    print("hvm-pv: blk wrote and read back 4096 bytes at sector 8: %s\n",
          same ? "same" : "DIFFERENT");
    check(blk_io(BLKIF_OP_READ, sectors, 1) == BLKIF_RSP_ERROR, "a read beyond the disk: error");

    check(xs_write_fe("state", "5") == 0, "write state Closing");
    check(wait_backend(5, 6) > 0, "back end closing");
    check(xs_write_fe("state", "6") == 0, "write state Closed");
    check(wait_backend(6, 6) == 6, "back end Closed");
    check(end_grant(REF_RING) && end_grant(REF_DATA), "grants ended (not in use)");
    struct evtchn_close cl = { port };
    check(hcall(HC_event_channel_op, EVTCHNOP_close, V(&cl), 0) == 0, "EVTCHNOP_close");
    print("hvm-pv: blkfront closed\n");
}

void blk_test(void)
{
    disk();
}
