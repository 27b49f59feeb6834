/*
 * The minimal IPv4 stack (see ipstack.h).  Input runs in the netfront
 * event handler (events masked): answers (ARP replies, echo replies, UDP
 * echoes) are sent from there without waiting; a full TX ring drops them,
 * as a real stack would under load.  Waiting calls (ping, arp_resolve,
 * udp_wait) run in the main loop and block between events.
 */
#include "clock.h"
#include "console.h"
#include "events.h"
#include "ipstack.h"
#include "printf.h"
#include "sched.h"
#include "string.h"

#define ETH_HLEN        14
#define ETH_P_IP        0x0800
#define ETH_P_ARP       0x0806
#define IP_HLEN         20
#define UDP_HLEN        8
#define ICMP_HLEN       8
#define IPPROTO_ICMP    1
#define IPPROTO_UDP     17
#define ARP_ENTRIES     16
#define PING_ID         0x7870          /* "xp" */
#define MAX_PAYLOAD     1472            /* one Ethernet frame */

struct ip_stats ip_stats;

static struct {
    uint32_t ip, mask;
} ifaddr[NF_MAX_DEVS];

static struct {
    uint32_t ip;
    uint8_t mac[6];
    bool valid;
} arp_cache[ARP_ENTRIES];
static unsigned int arp_next;

/* The echo reply we wait for, and the UDP port we wait on. */
static volatile uint16_t ping_wait_seq;
static volatile bool ping_got;
static volatile uint64_t ping_rx_ns;

static volatile uint16_t udp_wait_port;
static volatile bool udp_got;
static uint8_t udp_buf[MAX_PAYLOAD];
static volatile unsigned int udp_len;
static volatile uint32_t udp_from;

static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* ---- byte order and checksums ---- */
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, unsigned int len)
{
    while (len > 1) {
        sum += get16(p);
        p += 2;
        len -= 2;
    }
    if (len)
        sum += (uint32_t)p[0] << 8;
    return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

static uint32_t pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto, unsigned int len)
{
    return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}

/* ---- addresses ---- */
bool ip_parse(const char *s, uint32_t *ip, int *prefix)
{
    uint32_t v = 0;
    int part, parts = 0;

    while (parts < 4) {
        if (*s < '0' || *s > '9')
            return false;
        for (part = 0; *s >= '0' && *s <= '9'; s++) {
            part = part * 10 + (*s - '0');
            if (part > 255)
                return false;
        }
        v = v << 8 | (uint32_t)part;
        if (++parts < 4 && *s++ != '.')
            return false;
    }
    if (prefix)
        *prefix = 24;
    if (*s == '/' && prefix) {
        int n = 0;

        for (s++; *s >= '0' && *s <= '9'; s++)
            n = n * 10 + (*s - '0');
        if (n < 1 || n > 32)
            return false;
        *prefix = n;
    }
    if (*s && *s != ' ')
        return false;
    *ip = v;
    return true;
}

void ip_format(uint32_t ip, char *buf, size_t size)
{
    snprintf(buf, size, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

static int index_of(const struct netfront *nf)
{
    unsigned int i;

    for (i = 0; i < NF_MAX_DEVS; i++)
        if (netfront_get(i) == nf)
            return (int)i;
    return -1;
}

uint32_t ipstack_addr(const struct netfront *nf, uint32_t *mask)
{
    int i = index_of(nf);

    if (i < 0)
        return 0;
    if (mask)
        *mask = ifaddr[i].mask;
    return ifaddr[i].ip;
}

int ipstack_set(struct netfront *nf, const char *text)
{
    int i = index_of(nf), prefix;
    uint32_t ip;

    if (i < 0 || !ip_parse(text, &ip, &prefix))
        return -1;
    ifaddr[i].ip = ip;
    ifaddr[i].mask = prefix == 32 ? 0xffffffffU : ~((1U << (32 - prefix)) - 1);
    return 0;
}

void ipstack_attach(struct netfront *nf)
{
    int i = index_of(nf);

    if (i < 0)
        return;
    ifaddr[i].ip = ifaddr[i].mask = 0;
    if (nf->ip[0])
        ipstack_set(nf, nf->ip);
}

struct netfront *ipstack_route(uint32_t dst)
{
    struct netfront *first = NULL;
    unsigned int i;

    for (i = 0; i < NF_MAX_DEVS; i++) {
        struct netfront *nf = netfront_get(i);

        if (!nf || !nf->connected || !ifaddr[i].ip)
            continue;
        if ((dst & ifaddr[i].mask) == (ifaddr[i].ip & ifaddr[i].mask))
            return nf;
        if (!first)
            first = nf;
    }
    return first;
}

/* ---- ARP ---- */
static void arp_learn(uint32_t ip, const uint8_t *mac)
{
    unsigned int i;

    for (i = 0; i < ARP_ENTRIES; i++)
        if (arp_cache[i].valid && arp_cache[i].ip == ip) {
            memcpy(arp_cache[i].mac, mac, 6);
            return;
        }
    i = arp_next++ % ARP_ENTRIES;
    arp_cache[i].ip = ip;
    memcpy(arp_cache[i].mac, mac, 6);
    arp_cache[i].valid = true;
}

static bool arp_lookup(uint32_t ip, uint8_t mac[6])
{
    unsigned int i;

    for (i = 0; i < ARP_ENTRIES; i++)
        if (arp_cache[i].valid && arp_cache[i].ip == ip) {
            memcpy(mac, arp_cache[i].mac, 6);
            return true;
        }
    return false;
}

static void eth_header(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    put16(f + 12, type);
}

static int send_arp(struct netfront *nf, uint16_t op, const uint8_t *tha, uint32_t tip,
                    const uint8_t *eth_dst, bool wait)
{
    uint8_t f[ETH_HLEN + 28];
    struct nf_seg seg = { f, sizeof(f) };
    uint32_t me = ipstack_addr(nf, NULL);

    eth_header(f, eth_dst, nf->mac, ETH_P_ARP);
    put16(f + 14, 1);               /* Ethernet */
    put16(f + 16, ETH_P_IP);
    f[18] = 6;
    f[19] = 4;
    put16(f + 20, op);
    memcpy(f + 22, nf->mac, 6);
    put32(f + 28, me);
    memcpy(f + 32, tha, 6);
    put32(f + 38, tip);
    return netfront_xmit(nf, &seg, 1, 0, wait);
}

static void arp_input(struct netfront *nf, const uint8_t *f, unsigned int len)
{
    const uint8_t *a = f + ETH_HLEN;
    uint32_t me = ipstack_addr(nf, NULL), sip, tip;
    uint16_t op;

    if (len < ETH_HLEN + 28 || get16(a) != 1 || get16(a + 2) != ETH_P_IP ||
        a[4] != 6 || a[5] != 4)
        return;
    op = get16(a + 6);
    sip = get32(a + 14);
    tip = get32(a + 24);
    if (sip)
        arp_learn(sip, a + 8);
    if (op == 1 && me && tip == me) {
        ip_stats.arp_requests_answered++;
        send_arp(nf, 2, a + 8, sip, a + 8, false);
    } else if (op == 2) {
        ip_stats.arp_replies_seen++;
    }
}

int arp_resolve(struct netfront *nf, uint32_t dst, uint8_t mac[6], uint64_t timeout_ns)
{
    static const uint8_t zero[6];
    uint64_t now = system_time_ns(), deadline = now + timeout_ns, next = now;
    unsigned long flags;
    int rc = -1;

    if (dst == 0xffffffffU) {
        memcpy(mac, bcast, 6);
        return 0;
    }
    flags = local_irq_save();
    for (;;) {
        if (arp_lookup(dst, mac)) {
            rc = 0;
            break;
        }
        now = system_time_ns();
        if (now > deadline)
            break;
        if (now >= next) {
            local_irq_restore(flags);
            send_arp(nf, 1, zero, dst, bcast, true);
            flags = local_irq_save();
            next = now + 200 * NSEC_PER_MSEC;
            continue;
        }
        block();                    /* the 10 ms periodic timer bounds this */
        local_irq_disable();
    }
    local_irq_restore(flags);
    return rc;
}

/* ---- IPv4 ---- */
static unsigned int ip_header(uint8_t *p, uint32_t src, uint32_t dst, uint8_t proto,
                              unsigned int payload)
{
    static uint16_t ident;

    p[0] = 0x45;
    p[1] = 0;
    put16(p + 2, (uint16_t)(IP_HLEN + payload));
    put16(p + 4, ident++);
    put16(p + 6, 0x4000);           /* DF */
    p[8] = 64;
    p[9] = proto;
    put16(p + 10, 0);
    put32(p + 12, src);
    put32(p + 16, dst);
    put16(p + 10, (uint16_t)~csum_fold(csum_add(0, p, IP_HLEN)));
    return IP_HLEN;
}

/*
 * Send an IPv4 packet: the headers in one slot, the payload in a second
 * (NETTXF_more_data), as scatter-gather drivers do.
 */
static int ip_send(struct netfront *nf, const uint8_t *dmac, uint32_t dst, uint8_t proto,
                   const uint8_t *l4hdr, unsigned int l4hlen, const void *payload,
                   unsigned int plen, unsigned int txflags, bool wait)
{
    uint8_t hdr[ETH_HLEN + IP_HLEN + 16];
    struct nf_seg segs[2];

    eth_header(hdr, dmac, nf->mac, ETH_P_IP);
    ip_header(hdr + ETH_HLEN, ipstack_addr(nf, NULL), dst, proto, l4hlen + plen);
    memcpy(hdr + ETH_HLEN + IP_HLEN, l4hdr, l4hlen);
    segs[0].data = hdr;
    segs[0].len = ETH_HLEN + IP_HLEN + l4hlen;
    segs[1].data = payload;
    segs[1].len = plen;
    return netfront_xmit(nf, segs, 2, txflags, wait);
}

static void icmp_input(struct netfront *nf, const uint8_t *f, const uint8_t *ip,
                       unsigned int iplen, unsigned int hl)
{
    const uint8_t *icmp = ip + hl;
    unsigned int len = iplen - hl;
    uint8_t h[ICMP_HLEN];

    if (len < ICMP_HLEN || csum_fold(csum_add(0, icmp, len)) != 0xffff) {
        ip_stats.ip_bad++;
        return;
    }
    if (icmp[0] == 8 && icmp[1] == 0) {             /* echo request */
        memcpy(h, icmp, ICMP_HLEN);
        h[0] = 0;
        put16(h + 2, 0);
        put16(h + 2, (uint16_t)~csum_fold(csum_add(csum_add(0, h, ICMP_HLEN),
                                                   icmp + ICMP_HLEN, len - ICMP_HLEN)));
        if (ip_send(nf, f + 6, get32(ip + 12), IPPROTO_ICMP, h, ICMP_HLEN,
                    icmp + ICMP_HLEN, len - ICMP_HLEN, 0, false) == 0)
            ip_stats.icmp_echo_answered++;
    } else if (icmp[0] == 0 && get16(icmp + 4) == PING_ID) {   /* our echo reply */
        ip_stats.icmp_replies_seen++;
        if (get16(icmp + 6) == ping_wait_seq && !ping_got) {
            ping_rx_ns = system_time_ns();
            ping_got = true;
        }
    }
}

static void udp_input(struct netfront *nf, const uint8_t *f, const uint8_t *ip,
                      unsigned int iplen, unsigned int hl, unsigned int rxflags)
{
    const uint8_t *u = ip + hl;
    unsigned int len = iplen - hl, plen;
    uint16_t sport, dport;
    uint32_t src = get32(ip + 12), dst = get32(ip + 16);

    if (len < UDP_HLEN || get16(u + 4) < UDP_HLEN || get16(u + 4) > len) {
        ip_stats.ip_bad++;
        return;
    }
    len = get16(u + 4);
    /* A checksum the back end validated, or left blank, is not checked. */
    if (!(rxflags & (NETRXF_data_validated | NETRXF_csum_blank)) && get16(u + 6) &&
        csum_fold(csum_add(pseudo_sum(src, dst, IPPROTO_UDP, len), u, len)) != 0xffff) {
        ip_stats.udp_bad_csum++;
        return;
    }
    sport = get16(u);
    dport = get16(u + 2);
    plen = len - UDP_HLEN;
    if (dport == UDP_ECHO_PORT) {
        if (ipstack_udp_send(src, UDP_ECHO_PORT, sport, u + UDP_HLEN, plen, false) == 0)
            ip_stats.udp_echoed++;
        (void)f;
        (void)nf;
    } else if (dport == UDP_DISCARD_PORT) {
        uint64_t now = system_time_ns();

        if (!ip_stats.sink_packets)
            ip_stats.sink_first_ns = now;
        ip_stats.sink_last_ns = now;
        ip_stats.sink_packets++;
        ip_stats.sink_bytes += plen;
    } else if (dport == udp_wait_port && !udp_got) {
        if (plen > sizeof(udp_buf))
            plen = sizeof(udp_buf);
        memcpy(udp_buf, u + UDP_HLEN, plen);
        udp_len = plen;
        udp_from = src;
        udp_got = true;
    }
}

void ipstack_input(struct netfront *nf, const uint8_t *f, unsigned int len,
                   unsigned int rxflags)
{
    const uint8_t *ip = f + ETH_HLEN;
    uint32_t me = ipstack_addr(nf, NULL), dst;
    unsigned int hl, iplen;

    if (len < ETH_HLEN)
        return;
    if (memcmp(f, nf->mac, 6) != 0 && !(f[0] & 1))
        return;                                     /* not for us */
    if (get16(f + 12) == ETH_P_ARP) {
        arp_input(nf, f, len);
        return;
    }
    if (get16(f + 12) != ETH_P_IP || len < ETH_HLEN + IP_HLEN)
        return;
    hl = (unsigned int)(ip[0] & 15) * 4;
    iplen = get16(ip + 2);
    if ((ip[0] >> 4) != 4 || hl < IP_HLEN || iplen < hl || iplen > len - ETH_HLEN ||
        csum_fold(csum_add(0, ip, hl)) != 0xffff || (get16(ip + 6) & 0x3fff)) {
        ip_stats.ip_bad++;                          /* bad, or a fragment */
        return;
    }
    dst = get32(ip + 16);
    if (!me || (dst != me && dst != 0xffffffffU))
        return;
    arp_learn(get32(ip + 12), f + 6);
    if (ip[9] == IPPROTO_ICMP)
        icmp_input(nf, f, ip, iplen, hl);
    else if (ip[9] == IPPROTO_UDP)
        udp_input(nf, f, ip, iplen, hl, rxflags);
}

/* ---- what commands call ---- */
int ipstack_udp_send(uint32_t dst, uint16_t sport, uint16_t dport, const void *data,
                     unsigned int len, bool csum_offload)
{
    struct netfront *nf = ipstack_route(dst);
    uint8_t mac[6], u[UDP_HLEN];
    uint32_t src, sum;
    bool in_upcall = irqs_disabled();

    if (!nf || len > MAX_PAYLOAD)
        return -1;
    src = ipstack_addr(nf, NULL);
    if (in_upcall ? !arp_lookup(dst, mac) : arp_resolve(nf, dst, mac, NSEC_PER_SEC) != 0)
        return -1;
    put16(u, sport);
    put16(u + 2, dport);
    put16(u + 4, (uint16_t)(UDP_HLEN + len));
    put16(u + 6, 0);
    sum = pseudo_sum(src, dst, IPPROTO_UDP, UDP_HLEN + len);
    if (csum_offload) {
        /* CHECKSUM_PARTIAL: the pseudo-header sum, the rest is the back end's */
        put16(u + 6, csum_fold(sum));
    } else {
        uint16_t c = (uint16_t)~csum_fold(csum_add(csum_add(sum, u, UDP_HLEN), data, len));

        put16(u + 6, c ? c : 0xffff);
    }
    return ip_send(nf, mac, dst, IPPROTO_UDP, u, UDP_HLEN, data, len,
                   csum_offload ? NETTXF_csum_blank | NETTXF_data_validated : 0, !in_upcall);
}

void ipstack_udp_listen(uint16_t port)
{
    unsigned long flags = local_irq_save();

    udp_got = false;
    udp_wait_port = port;
    local_irq_restore(flags);
}

int ipstack_udp_wait(uint16_t port, void *buf, unsigned int size, uint32_t *from,
                     uint64_t timeout_ns)
{
    uint64_t deadline = system_time_ns() + timeout_ns;
    unsigned long flags = local_irq_save();
    int rc = -1;

    if (udp_wait_port != port) {        /* not listening yet (no ipstack_udp_listen) */
        udp_got = false;
        udp_wait_port = port;
    }
    while (!udp_got && system_time_ns() < deadline) {
        block();
        local_irq_disable();
    }
    if (udp_got) {
        rc = (int)(udp_len < size ? udp_len : size);
        memcpy(buf, udp_buf, (size_t)rc);
        if (from)
            *from = udp_from;
    }
    udp_got = false;
    udp_wait_port = 0;
    local_irq_restore(flags);
    return rc;
}

static uint8_t ping_payload[MAX_PAYLOAD];

int ipstack_ping(uint32_t dst, uint16_t seq, unsigned int size, uint64_t timeout_ns,
                 uint64_t *rtt_ns)
{
    struct netfront *nf = ipstack_route(dst);
    uint8_t mac[6], h[ICMP_HLEN];
    uint64_t t0, deadline;
    unsigned long flags;
    unsigned int i;
    int rc = -1;

    if (!nf || size > MAX_PAYLOAD)
        return -1;
    if (arp_resolve(nf, dst, mac, timeout_ns) != 0)
        return -1;
    for (i = 0; i < size; i++)
        ping_payload[i] = (uint8_t)(i + seq);
    h[0] = 8;
    h[1] = 0;
    put16(h + 2, 0);
    put16(h + 4, PING_ID);
    put16(h + 6, seq);
    put16(h + 2, (uint16_t)~csum_fold(csum_add(csum_add(0, h, ICMP_HLEN), ping_payload, size)));
    flags = local_irq_save();
    ping_wait_seq = seq;
    ping_got = false;
    local_irq_restore(flags);
    t0 = system_time_ns();
    deadline = t0 + timeout_ns;
    if (ip_send(nf, mac, dst, IPPROTO_ICMP, h, ICMP_HLEN, ping_payload, size, 0, true))
        return -1;
    flags = local_irq_save();
    while (!ping_got && system_time_ns() < deadline) {
        block();
        local_irq_disable();
    }
    if (ping_got) {
        *rtt_ns = ping_rx_ns - t0;
        rc = 0;
    }
    ping_wait_seq = 0xffff;
    local_irq_restore(flags);
    return rc;
}

int ipstack_spoof_ping(uint32_t dst, const uint8_t fake_mac[6])
{
    struct netfront *nf = ipstack_route(dst);
    uint8_t mac[6], real[6], h[ICMP_HLEN];
    unsigned long flags;
    int rc;

    if (!nf || arp_resolve(nf, dst, mac, NSEC_PER_SEC) != 0)
        return -1;
    h[0] = 8;
    h[1] = 0;
    put16(h + 2, 0);
    put16(h + 4, PING_ID);
    put16(h + 6, 0x5eed);
    put16(h + 2, (uint16_t)~csum_fold(csum_add(0, h, ICMP_HLEN)));
    flags = local_irq_save();
    memcpy(real, nf->mac, 6);
    memcpy(nf->mac, fake_mac, 6);           /* only for this one frame */
    rc = ip_send(nf, mac, dst, IPPROTO_ICMP, h, ICMP_HLEN, NULL, 0, 0, false);
    memcpy(nf->mac, real, 6);
    local_irq_restore(flags);
    return rc;
}
