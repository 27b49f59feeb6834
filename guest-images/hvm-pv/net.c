/*
 * hvm-pv: one NIC through netfront, from an HVM guest (io/netif.h, the
 * handshake Linux's xen-netfront does): find device/vif/N, wait for the
 * back end's InitWait, share a TX and an RX ring and an event channel,
 * request-rx-copy, Connected; post RX buffers, send an ARP request for
 * A.B.C.1 of our own address (the back end's "ip"), and wait for the
 * reply; close.  The test boots a PV guest at A.B.C.1 on the same switch.
 */
#include "hvmpv.h"
#include "interdomain.h"
#include "netfront.h"

#define REF_TX_RING     (GNTTAB_NR_RESERVED_ENTRIES + 2)
#define REF_RX_RING     (GNTTAB_NR_RESERVED_ENTRIES + 3)
#define REF_TX_BUF      (GNTTAB_NR_RESERVED_ENTRIES + 4)
#define REF_RX_BUF      (GNTTAB_NR_RESERVED_ENTRIES + 5)   /* RX_BUFS of them */
#define RX_BUFS         4
#define ARP_LEN         60              /* 42 bytes, padded to the Ethernet minimum */

static uint8_t tx_ring[4096] __attribute__((aligned(4096)));
static uint8_t rx_ring[4096] __attribute__((aligned(4096)));
static uint8_t tx_buf[4096] __attribute__((aligned(4096)));
static uint8_t rx_buf[RX_BUFS][4096] __attribute__((aligned(4096)));
static char fe[32], be[96], buf[96];
static uint32_t port;

static int xs_at(uint32_t type, const char *dir, const char *key, const char *value,
                 char *out, uint32_t n)
{
    static char path[160];
    uint32_t i = 0;
    for (const char *s = dir; *s && i < sizeof(path) - 2; s++)
        path[i++] = *s;
    path[i++] = '/';
    for (const char *s = key; *s && i < sizeof(path) - 1; s++)
        path[i++] = *s;
    path[i] = 0;
    return xs_request(type, path, value, out, n);
}

static uint32_t num(const char **s)
{
    uint32_t v = 0;
    while (**s >= '0' && **s <= '9')
        v = v * 10 + (uint32_t)(*(*s)++ - '0');
    return v;
}

static const char *dec(uint32_t v)
{
    static char b[12];
    int n = 11;
    b[n] = 0;
    do { b[--n] = (char)('0' + v % 10); v /= 10; } while (v);
    return b + n;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    for (int i = 0; i < 6; i++, s += 3) {
        int h = hexval(s[0]), l = hexval(s[1]);
        if (h < 0 || l < 0 || (i < 5 && s[2] != ':'))
            return -1;
        mac[i] = (uint8_t)(h << 4 | l);
    }
    return 0;
}

static int parse_ip(const char *s, uint8_t ip[4])
{
    for (int i = 0; i < 4; i++) {
        if (*s < '0' || *s > '9')
            return -1;
        uint32_t v = num(&s);
        if (v > 255 || (i < 3 && *s++ != '.'))
            return -1;
        ip[i] = (uint8_t)v;
    }
    return 0;
}

static uint32_t backend_state(void)
{
    const char *p = buf;
    return xs_at(XS_READ, be, "state", 0, buf, sizeof(buf)) > 0 ? num(&p) : 0;
}

static int wait_backend(uint32_t lo, uint32_t hi)
{
    for (int i = 0; i < 4000; i++) {
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

static void notify(void)
{
    struct evtchn_send send = { port };
    hcall(HC_event_channel_op, EVTCHNOP_send, V(&send), 0);
}

/* An ARP reply from `ip` among the RX responses: its MAC, or -1. */
static int arp_reply(volatile struct netif_rx_sring *rx, RING_IDX *cons, const uint8_t ip[4],
                     uint8_t mac[6])
{
    while (*cons != rx->h.rsp_prod) {
        struct netif_rx_response r = rx->ring[*cons % NET_RING_SIZE].rsp;
        (*cons)++;
        if (r.status < 28 + 14 || r.id >= RX_BUFS)
            continue;
        const uint8_t *f = rx_buf[r.id] + r.offset;
        if (f[12] == 0x08 && f[13] == 0x06 && f[20] == 0 && f[21] == 2 &&
            !memcmp(f + 28, ip, 4)) {
            memcpy(mac, f + 22, 6);
            return 0;
        }
    }
    return -1;
}

void net_test(void)
{
    char list[64];
    uint8_t mac[6], ip[4], target[4], peer[6];
    if (xs_request(XS_DIRECTORY, "device/vif", 0, list, sizeof(list)) <= 0) {
        print("hvm-pv: no PV NIC (device/vif): netfront not tried\n");
        return;
    }
    const char *p = list;
    const char *h = dec(num(&p));
    uint32_t i = 0;
    for (const char *s = "device/vif/"; *s; s++)
        fe[i++] = *s;
    for (; *h; h++)
        fe[i++] = *h;
    fe[i] = 0;
    check(xs_at(XS_READ, fe, "backend", 0, be, sizeof(be)) > 0, "vif backend path");
    check(xs_at(XS_READ, fe, "mac", 0, buf, sizeof(buf)) > 0 && !parse_mac(buf, mac), "vif mac");
    if (xs_at(XS_READ, be, "ip", 0, buf, sizeof(buf)) <= 0 || parse_ip(buf, ip)) {
        print("hvm-pv: the vif has no ip: netfront not tried\n");
        return;
    }
    print("hvm-pv: netfront %s, back end %s, ip %s\n", fe, be, buf);
    if (wait_backend(2, 2) != 2) {
        check(0, "vif back end in InitWait");
        return;
    }

    struct evtchn_alloc_unbound au = { DOMID_SELF, 0, 0 };
    check(hcall(HC_event_channel_op, EVTCHNOP_alloc_unbound, V(&au), 0) == 0,
          "EVTCHNOP_alloc_unbound (vif)");
    port = au.port;
    volatile struct netif_tx_sring *tx = (void *)tx_ring;
    volatile struct netif_rx_sring *rx = (void *)rx_ring;
    tx->h.req_event = tx->h.rsp_event = rx->h.req_event = rx->h.rsp_event = 1;
    grant(REF_TX_RING, tx_ring, 0);
    grant(REF_RX_RING, rx_ring, 0);
    grant(REF_TX_BUF, tx_buf, 1);
    for (i = 0; i < RX_BUFS; i++)
        grant(REF_RX_BUF + i, rx_buf[i], 0);
    static const char *keys[][2] = {
        { "request-rx-copy", "1" }, { "feature-rx-notify", "1" }, { "feature-sg", "0" },
    };
    char ok[4];
    check(xs_at(XS_WRITE, fe, "tx-ring-ref", dec(REF_TX_RING), ok, sizeof(ok)) >= 0 &&
          xs_at(XS_WRITE, fe, "rx-ring-ref", dec(REF_RX_RING), ok, sizeof(ok)) >= 0 &&
          xs_at(XS_WRITE, fe, "event-channel", dec(port), ok, sizeof(ok)) >= 0,
          "write the vif's rings and event channel");
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        xs_at(XS_WRITE, fe, keys[i][0], keys[i][1], ok, sizeof(ok));
    check(xs_at(XS_WRITE, fe, "state", "4", ok, sizeof(ok)) >= 0, "write vif state Connected");
    if (wait_backend(4, 4) != 4) {
        check(0, "vif back end Connected");
        return;
    }
    for (i = 0; i < RX_BUFS; i++) {
        rx->ring[i].req.id = (uint16_t)i;
        rx->ring[i].req.gref = REF_RX_BUF + i;
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    rx->h.req_prod = RX_BUFS;
    notify();

    /* who-has A.B.C.1, tell ours */
    memcpy(target, ip, 4);
    target[3] = 1;
    uint8_t *f = tx_buf;
    memset(f, 0, ARP_LEN);
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    f[12] = 0x08, f[13] = 0x06;                     /* ARP */
    f[15] = 1, f[16] = 0x08, f[18] = 6, f[19] = 4;  /* Ethernet, IPv4 */
    f[21] = 1;                                      /* request */
    memcpy(f + 22, mac, 6);
    memcpy(f + 28, ip, 4);
    memcpy(f + 38, target, 4);
    tx->ring[0].req = (struct netif_tx_request){ REF_TX_BUF, 0, 0, 0, ARP_LEN };
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    tx->h.req_prod = 1;
    notify();

    RING_IDX rx_cons = 0;
    int got = -1;
    for (uint32_t n = 0; n < 200000000 && (got || tx->h.rsp_prod == 0); n++) {
        if (got)
            got = arp_reply(rx, &rx_cons, target, peer);
        __asm__ volatile("pause");
    }
    check(tx->h.rsp_prod == 1 && tx->ring[0].rsp.status == NETIF_RSP_OKAY, "ARP request sent");
    check(got == 0, "an ARP reply");
    if (!got)
        print("hvm-pv: netfront: %u.%u.%u.%u is at %x:%x:%x:%x:%x:%x\n", target[0], target[1],
              target[2], target[3], peer[0], peer[1], peer[2], peer[3], peer[4], peer[5]);

    check(xs_at(XS_WRITE, fe, "state", "5", ok, sizeof(ok)) >= 0, "write vif state Closing");
    check(wait_backend(5, 6) > 0, "vif back end closing");
    check(xs_at(XS_WRITE, fe, "state", "6", ok, sizeof(ok)) >= 0, "write vif state Closed");
    check(wait_backend(6, 6) == 6, "vif back end Closed");
    struct evtchn_close cl = { port };
    check(hcall(HC_event_channel_op, EVTCHNOP_close, V(&cl), 0) == 0, "EVTCHNOP_close (vif)");
    print("hvm-pv: netfront closed\n");
}
