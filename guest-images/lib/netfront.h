/*
 * A netfront (io/netif.h): the guest half of Xen's split network driver.
 *
 * One TX and one RX ring page shared with the back end by grant, one
 * event channel for both, request-rx-copy (the back end grant-copies each
 * received frame into a page we posted).  Every buffer page is granted
 * once, at connect, and reused: TX pages read-only, RX pages writable.
 * A frame we send is split into one slot for the headers and one for the
 * rest (NETTXF_more_data), as a real driver does with an skb's fragments.
 */
#ifndef NETFRONT_H
#define NETFRONT_H

#include "compiler.h"
#include "gnttab.h"
#include "xen-abi.h"

/* ---- io/ring.h and io/netif.h (i386 = x86_64 layouts) ---- */
typedef uint32_t RING_IDX;

#define NETTXF_csum_blank       (1U << 0)
#define NETTXF_data_validated   (1U << 1)
#define NETTXF_more_data        (1U << 2)
#define NETTXF_extra_info       (1U << 3)

#define NETRXF_data_validated   (1U << 0)
#define NETRXF_csum_blank       (1U << 1)
#define NETRXF_more_data        (1U << 2)
#define NETRXF_extra_info       (1U << 3)

#define NETIF_RSP_DROPPED       (-2)
#define NETIF_RSP_ERROR         (-1)
#define NETIF_RSP_OKAY          0
#define NETIF_RSP_NULL          1

struct netif_tx_request {
    grant_ref_t gref;
    uint16_t offset;
    uint16_t flags;
    uint16_t id;
    uint16_t size;
};

struct netif_tx_response {
    uint16_t id;
    int16_t  status;
};

struct netif_rx_request {
    uint16_t id;
    uint16_t pad;
    grant_ref_t gref;
};

struct netif_rx_response {
    uint16_t id;
    uint16_t offset;
    uint16_t flags;
    int16_t  status;
};

struct sring_header {
    RING_IDX req_prod, req_event;
    RING_IDX rsp_prod, rsp_event;
    uint8_t  pvt[4];
    uint8_t  pad[44];
};

#define NET_RING_SIZE   256     /* both rings: __CONST_RING_SIZE(netif_*, 4096) */

union netif_tx_entry {
    struct netif_tx_request req;
    struct netif_tx_response rsp;
};

union netif_rx_entry {
    struct netif_rx_request req;
    struct netif_rx_response rsp;
};

struct netif_tx_sring {
    struct sring_header h;
    union netif_tx_entry ring[NET_RING_SIZE];
};

struct netif_rx_sring {
    struct sring_header h;
    union netif_rx_entry ring[NET_RING_SIZE];
};

_Static_assert(sizeof(struct netif_tx_request) == 12, "netif_tx_request");
_Static_assert(sizeof(struct netif_tx_response) == 4, "netif_tx_response");
_Static_assert(sizeof(struct netif_rx_request) == 8, "netif_rx_request");
_Static_assert(sizeof(struct netif_rx_response) == 8, "netif_rx_response");
_Static_assert(sizeof(struct sring_header) == 64, "sring header");
_Static_assert(sizeof(struct netif_tx_sring) <= 4096, "tx sring");
_Static_assert(sizeof(struct netif_rx_sring) <= 4096, "rx sring");

/* ---- the driver ---- */
#define NF_MAX_DEVS     2
#define NF_RX_BUFS      32      /* pages posted on the RX ring */
#define NF_TX_BUFS      32      /* TX slots in flight at once */
#define NF_MAX_FRAME    9000    /* largest frame we reassemble or send */
#define NF_ETH_ALEN     6

struct netfront;
typedef void (*netfront_rx_fn)(struct netfront *nf, const uint8_t *frame,
                               unsigned int len, unsigned int rxflags);

struct netfront_stats {
    uint32_t rx_packets, rx_bytes, rx_errors, rx_csum_blank;
    uint32_t tx_packets, tx_bytes, tx_errors, tx_busy;
    int last_tx_status;     /* the last non-OKAY TX response status */
};

struct netfront {
    bool used;                  /* a slot in the device table */
    bool connected;
    bool broken;                /* the back end went away under us */
    unsigned int devid;
    domid_t backend_id;
    char nodename[32];          /* device/vif/N */
    char backend[96];
    uint8_t mac[NF_ETH_ALEN];
    char ip[20];                /* from the back end's "ip" key, if any */
    evtchn_port_t port;
    struct netif_tx_sring *txs;
    struct netif_rx_sring *rxs;
    grant_ref_t tx_ring_ref, rx_ring_ref;
    RING_IDX tx_prod, tx_cons;  /* req_prod_pvt, rsp_cons */
    RING_IDX rx_prod, rx_cons;
    uint8_t *rx_page[NF_RX_BUFS];
    grant_ref_t rx_gref[NF_RX_BUFS];
    uint8_t *tx_page[NF_TX_BUFS];
    grant_ref_t tx_gref[NF_TX_BUFS];
    uint16_t tx_free[NF_TX_BUFS];
    unsigned int nr_tx_free;
    bool hold_rx;               /* testing: stop re-posting RX buffers */
    unsigned int rx_held;
    uint16_t held_ids[NF_RX_BUFS];
    netfront_rx_fn rx;
    struct netfront_stats stats;
    /* multi-slot reassembly */
    unsigned int frag_len, frag_flags;
    bool frag_bad;
    uint8_t frag[NF_MAX_FRAME];
};

/* One piece of a frame to send (gathered into consecutive slots). */
struct nf_seg {
    const void *data;
    unsigned int len;
};

/*
 * Connect device/vif/<devid> (XenStore handshake, rings, buffers).
 * 0, or a negative error with a message printed.
 */
int netfront_connect(unsigned int devid, netfront_rx_fn rx);

/* Tear down as the back end asked (Closing): grants ended, port closed. */
void netfront_disconnect(struct netfront *nf);

/* The device by index in the table, or by devid; NULL if none. */
struct netfront *netfront_get(unsigned int index);
struct netfront *netfront_by_devid(unsigned int devid);

/*
 * Send a frame made of segs (each at most a page), with NETTXF_* flags on
 * the first slot.  With wait, block until ring slots free up (main
 * context only); without, a full ring drops the frame.  0 or -1.
 */
int netfront_xmit(struct netfront *nf, const struct nf_seg *segs,
                  unsigned int nsegs, unsigned int flags, bool wait);

/* Process responses now (the event handler's work), e.g. while polling. */
void netfront_poll(struct netfront *nf);

/* Lowest-level access for the hostile-frontend tests. */
void netfront_kick(struct netfront *nf);

/* Testing: stop (true) or resume re-posting RX buffers. */
void netfront_hold_rx(struct netfront *nf, bool hold);

/*
 * Watch device/vif so vifs attached later (network-attach) are connected
 * and vifs detached (network-detach) torn down; calls added(nf) for each
 * new one.  Connects those already present.
 */
void netfront_init_all(netfront_rx_fn rx, void (*added)(struct netfront *nf));

#endif /* NETFRONT_H */
