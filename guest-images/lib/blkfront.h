/*
 * A blkfront (io/blkif.h): the guest half of Xen's split block driver.
 *
 * The handshake is Linux xen-blkfront's: wait for the back end's InitWait,
 * read max-ring-page-order and feature-max-indirect-segments, share a ring
 * of 2^order pages (ring-ref, or ring-page-order + ring-refN), bind an
 * event channel, write protocol = x86_32-abi and state = Initialised, wait
 * for Connected, read sectors/info/sector-size/feature-*.  Requests carry
 * up to 11 segments, or up to BLK_POOL_PAGES through one indirect page.
 *
 * Data moves through a pool of BLK_POOL_PAGES pages granted to domain 0
 * once (as a frontend using persistent grants does), shared by every disk.
 * Synchronous: blkfront_rw() puts as many requests on the ring as the
 * transfer needs and waits for all of them.
 */
#ifndef BLKFRONT_H
#define BLKFRONT_H

#include "compiler.h"
#include "gnttab.h"
#include "xen-abi.h"

typedef uint32_t RING_IDX;

#define BLKIF_OP_READ               0
#define BLKIF_OP_WRITE              1
#define BLKIF_OP_WRITE_BARRIER      2
#define BLKIF_OP_FLUSH_DISKCACHE    3
#define BLKIF_OP_RESERVED_1         4
#define BLKIF_OP_DISCARD            5
#define BLKIF_OP_INDIRECT           6

#define BLKIF_RSP_EOPNOTSUPP        (-2)
#define BLKIF_RSP_ERROR             (-1)
#define BLKIF_RSP_OKAY              0

#define BLKIF_MAX_SEGMENTS_PER_REQUEST          11
#define BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST    8
#define BLKIF_DISCARD_SECURE        (1U << 0)

#define VDISK_CDROM                 1
#define VDISK_REMOVABLE             2
#define VDISK_READONLY              4

struct blkif_request_segment {
    grant_ref_t gref;
    uint8_t first_sect, last_sect;      /* 512-byte sectors within the page, 0..7 */
};

struct blkif_request {
    uint8_t  operation;
    uint8_t  nr_segments;
    uint16_t handle;
    uint64_t id;                        /* at 4 on i386 */
    uint64_t sector_number;
    struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};

struct blkif_request_discard {
    uint8_t  operation;
    uint8_t  flag;
    uint16_t handle;
    uint64_t id;
    uint64_t sector_number;
    uint64_t nr_sectors;
};

struct blkif_request_indirect {
    uint8_t  operation;
    uint8_t  indirect_op;
    uint16_t nr_segments;
    uint64_t id;
    uint64_t sector_number;
    uint16_t handle;
    uint16_t pad1;
    grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
    uint64_t pad2;                      /* i386 only */
};

struct blkif_response {
    uint64_t id;
    uint8_t  operation;
    int16_t  status;
};

union blkif_entry {
    struct blkif_request req;
    struct blkif_request_discard discard;
    struct blkif_request_indirect indirect;
    struct blkif_response rsp;
};

struct blkif_sring {
    RING_IDX req_prod, req_event;
    RING_IDX rsp_prod, rsp_event;
    uint8_t  pvt[4];
    uint8_t  pad[44];
    union blkif_entry ring[];
};

_Static_assert(sizeof(struct blkif_request_segment) == 8, "blkif_request_segment");
_Static_assert(__builtin_offsetof(struct blkif_request, id) == 4, "blkif_request.id");
_Static_assert(__builtin_offsetof(struct blkif_request, seg) == 20, "blkif_request.seg");
_Static_assert(sizeof(struct blkif_request) == 108, "blkif_request");
_Static_assert(__builtin_offsetof(struct blkif_request_discard, nr_sectors) == 20, "discard");
_Static_assert(__builtin_offsetof(struct blkif_request_indirect, indirect_grefs) == 24, "ind");
_Static_assert(sizeof(struct blkif_request_indirect) == 64, "blkif_request_indirect");
_Static_assert(sizeof(struct blkif_response) == 12, "blkif_response");
_Static_assert(sizeof(union blkif_entry) == 108, "blkif ring entry");
_Static_assert(sizeof(struct blkif_sring) == 64, "sring header");

/* ---- the driver ---- */
#define BLK_MAX_DEVS        4
#define BLK_RING_ORDER_MAX  2           /* up to 4 ring pages, 128 requests */
#define BLK_MAX_RING        128
#define BLK_POOL_PAGES      64          /* 256 KiB of data buffers */
#define BLK_SECTOR          512

struct blkfront_stats {
    uint32_t requests, errors;
    uint64_t read_bytes, write_bytes;
};

struct blkfront {
    bool used;
    bool connected;
    bool broken;                        /* the back end broke the ring */
    unsigned int devid;
    char name[16];                      /* the back end's "dev" (xvda), else the number */
    domid_t backend_id;
    char nodename[32];                  /* device/vbd/N */
    char backend[96];
    evtchn_port_t port;
    unsigned int ring_order, ring_size;
    struct blkif_sring *sring;
    grant_ref_t ring_ref[1 << BLK_RING_ORDER_MAX];
    RING_IDX req_prod_pvt, rsp_cons;
    uint64_t sectors;
    unsigned int sector_size, info;
    bool readonly, feature_flush, feature_barrier, feature_discard;
    unsigned int max_indirect;          /* the back end's; 0: none */
    bool use_indirect;                  /* use it for transfers over 11 pages */
    bool persistent;                    /* both ends offered feature-persistent */
    bool no_persistent;                 /* do not offer it (set before connecting) */
    void *indirect_page;
    grant_ref_t indirect_ref;
    struct {
        bool busy;
        volatile bool done;
        int16_t status;
    } shadow[BLK_MAX_RING];
    struct blkfront_stats stats;
};

/* Connect every device/vbd/N and watch for disks added and removed. */
void blkfront_init_all(void (*added)(struct blkfront *bf));

/* A connected (or closed but known) disk by name (xvda) or number; NULL. */
struct blkfront *blkfront_find(const char *name);
struct blkfront *blkfront_get(unsigned int index);

/* Connect device/vbd/devid with a ring of 2^order pages (-1: the largest
 * the back end and we allow); 0 or a negative error. */
int blkfront_connect(unsigned int devid, int order);
/* Close: state Closing, wait for the back end, end the grants, Closed. */
void blkfront_disconnect(struct blkfront *bf);
/* After a close: state Initialising, wait for InitWait, connect again. */
int blkfront_reconnect(struct blkfront *bf, int order);

/* The pool's pages (page-aligned, contiguous). */
uint8_t *blkfront_buffer(unsigned int page);

/*
 * Read or write nsect sectors at sector from/to the pool starting at
 * page first_page (nsect <= (BLK_POOL_PAGES - first_page) * 8).  Returns
 * BLKIF_RSP_OKAY, the worst BLKIF_RSP_* status, or a negative errno-like
 * value below -100 (-110: timeout, -105: not connected).
 */
int blkfront_rw(struct blkfront *bf, bool write, uint64_t sector, unsigned int nsect,
                unsigned int first_page);
/* FLUSH_DISKCACHE, or WRITE_BARRIER without data. */
int blkfront_flush(struct blkfront *bf, bool barrier);
int blkfront_discard(struct blkfront *bf, uint64_t sector, uint64_t nsect, bool secure);

/*
 * For hostile-frontend tests: put one request as given (its id is replaced
 * by ours), push, notify and wait for its status (-110 on timeout).
 */
int blkfront_raw_request(struct blkfront *bf, const union blkif_entry *req);
/* Write req_prod = rsp_cons + ahead (garbage) and notify. */
void blkfront_garbage_index(struct blkfront *bf, RING_IDX ahead);
/* The back end's state and its error node ("" if none). */
long blkfront_backend_state(struct blkfront *bf, char *error, size_t size);
/* The pool page grant references (for raw requests). */
grant_ref_t blkfront_pool_ref(unsigned int page);

#endif /* BLKFRONT_H */
