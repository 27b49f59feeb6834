/*
 * The demo's network commands (see netcmds.h).  Output lines start with
 * the command's name so a test can wait for them.
 *
 *   ip [show] | ip set A.B.C.D[/N] [VIF]
 *   ping IP [COUNT [SIZE]]
 *   udp send IP PORT TEXT      (prints the reply, e.g. from UDP echo, port 7)
 *   udp blast IP PORT SIZE COUNT [nocsum]
 *   udp stats [reset]          (the discard counter, port 9)
 *   net stats | net spoof IP | net hold on|off [VIF]
 *   net evil badgref|shortframe|bigslot|manyslots|ringgarbage [VIF]
 */
#include "xenguest.h"
#include "ipstack.h"
#include "netfront.h"
#include "netcmds.h"

#define ARGS_SIZE   160

static char argbuf[ARGS_SIZE];

static char *args_copy(const char *args)
{
    size_t n = strnlen(args, sizeof(argbuf) - 1);

    memcpy(argbuf, args, n);
    argbuf[n] = '\0';
    return argbuf;
}

static char *next_word(char **p)
{
    char *w = *p, *e;

    while (*w == ' ')
        w++;
    if (!*w)
        return NULL;
    for (e = w; *e && *e != ' '; e++)
        ;
    if (*e)
        *e++ = '\0';
    *p = e;
    return w;
}

static bool parse_uint(const char *s, unsigned long *out)
{
    unsigned long v = 0;

    if (!s || *s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (unsigned long)(*s - '0');
    if (*s)
        return false;
    *out = v;
    return true;
}

static bool parse_ip(const char *s, uint32_t *ip)
{
    return s && ip_parse(s, ip, NULL);
}

static struct netfront *vif_arg(const char *w)
{
    unsigned long n = 0;

    if (w && !parse_uint(w, &n))
        return NULL;
    return netfront_by_devid((unsigned int)n);
}

/* ---- setup ---- */
static void cmdline_ip(struct netfront *nf)
{
    const char *c = start_info->cmd_line;
    char buf[24];
    size_t i;

    for (; *c; c++) {
        if ((c == start_info->cmd_line || c[-1] == ' ') && strncmp(c, "ip=", 3) == 0) {
            for (i = 0, c += 3; *c && *c != ' ' && i < sizeof(buf) - 1; i++, c++)
                buf[i] = *c;
            buf[i] = '\0';
            if (ipstack_set(nf, buf) == 0)
                printk("net: vif %u: ip %s from the command line\n", nf->devid, buf);
            return;
        }
    }
}

static void vif_added(struct netfront *nf)
{
    ipstack_attach(nf);
    if (!ipstack_addr(nf, NULL) && nf == netfront_get(0))
        cmdline_ip(nf);
}

void netcmds_init(void)
{
    netfront_init_all(ipstack_input, vif_added);
}

/* ---- ip ---- */
static void show_one(struct netfront *nf)
{
    uint32_t mask, ip = ipstack_addr(nf, &mask);
    char a[20];
    int prefix = 0;

    while (prefix < 32 && (mask & (0x80000000U >> prefix)))
        prefix++;
    ip_format(ip, a, sizeof(a));
    printk("ip: vif%u mac %02x:%02x:%02x:%02x:%02x:%02x ip %s/%d %s\n", nf->devid,
           nf->mac[0], nf->mac[1], nf->mac[2], nf->mac[3], nf->mac[4], nf->mac[5],
           ip ? a : "none", ip ? prefix : 0, nf->connected ? "connected" : "disconnected");
}

__noinline void cmd_ip(const char *args)
{
    char *p = args_copy(args), *w = next_word(&p);
    unsigned int i, shown = 0;

    if (!w || strcmp(w, "show") == 0) {
        for (i = 0; i < NF_MAX_DEVS; i++) {
            struct netfront *nf = netfront_get(i);

            if (nf) {
                show_one(nf);
                shown++;
            }
        }
        if (!shown)
            printk("ip: no network interfaces\n");
    } else if (strcmp(w, "set") == 0) {
        char *addr = next_word(&p);
        struct netfront *nf = vif_arg(next_word(&p));

        if (!addr || !nf || ipstack_set(nf, addr) != 0) {
            printk("ip: usage: ip set A.B.C.D[/N] [VIF]\n");
            return;
        }
        show_one(nf);
    } else {
        printk("ip: usage: ip [show] | ip set A.B.C.D[/N] [VIF]\n");
    }
}

/* ---- ping ---- */
__noinline void cmd_ping(const char *args)
{
    char *p = args_copy(args);
    unsigned long count = 3, size = 56, seq, ok = 0;
    uint32_t dst;
    char *w;

    if (!parse_ip(next_word(&p), &dst) ||
        ((w = next_word(&p)) && !parse_uint(w, &count)) ||
        ((w = next_word(&p)) && !parse_uint(w, &size))) {
        printk("ping: usage: ping IP [COUNT [SIZE]]\n");
        return;
    }
    if (!ipstack_route(dst)) {
        printk("ping: no interface with an address (ip set A.B.C.D)\n");
        return;
    }
    for (seq = 1; seq <= count; seq++) {
        uint64_t rtt;
        char a[20];

        ip_format(dst, a, sizeof(a));
        if (ipstack_ping(dst, (uint16_t)seq, (unsigned int)size, NSEC_PER_SEC, &rtt) == 0) {
            printk("ping: reply from %s seq %lu time %llu us\n", a, seq, rtt / 1000);
            ok++;
        } else {
            printk("ping: timeout seq %lu\n", seq);
        }
    }
    printk("ping: %lu/%lu replies\n", ok, count);
}

/* ---- udp ---- */
static uint8_t blast_buf[1472];

__noinline void cmd_udp(const char *args)
{
    char *p = args_copy(args), *w = next_word(&p);
    unsigned long port, size, count, i, sent = 0;
    uint32_t dst, from;
    char reply[200], a[20];
    int n;

    if (w && strcmp(w, "send") == 0) {
        if (!parse_ip(next_word(&p), &dst) || !parse_uint(next_word(&p), &port) || port > 65535) {
            printk("udp: usage: udp send IP PORT TEXT\n");
            return;
        }
        while (*p == ' ')
            p++;
        ipstack_udp_listen(40000);      /* before sending: the reply may beat us back */
        if (ipstack_udp_send(dst, 40000, (uint16_t)port, p, (unsigned int)strlen(p), true)) {
            ipstack_udp_listen(0);
            printk("udp: send failed (no route or no ARP reply)\n");
            return;
        }
        n = ipstack_udp_wait(40000, reply, sizeof(reply) - 1, &from, 2 * NSEC_PER_SEC);
        if (n < 0) {
            printk("udp: no reply\n");
            return;
        }
        reply[n] = '\0';
        ip_format(from, a, sizeof(a));
        printk("udp: reply from %s '%s'\n", a, reply);
    } else if (w && strcmp(w, "blast") == 0) {
        uint64_t t0, dt;
        bool csum = true;

        if (!parse_ip(next_word(&p), &dst) || !parse_uint(next_word(&p), &port) ||
            !parse_uint(next_word(&p), &size) || !parse_uint(next_word(&p), &count) ||
            size > sizeof(blast_buf) || port > 65535) {
            printk("udp: usage: udp blast IP PORT SIZE(<=1472) COUNT [nocsum]\n");
            return;
        }
        if ((w = next_word(&p)) && strcmp(w, "nocsum") == 0)
            csum = false;
        for (i = 0; i < size; i++)
            blast_buf[i] = (uint8_t)i;
        {
            struct netfront *nf = ipstack_route(dst);
            uint8_t hw[6];

            if (!nf || arp_resolve(nf, dst, hw, NSEC_PER_SEC) != 0) {
                printk("udp-blast: no route or no ARP reply\n");
                return;
            }
        }
        t0 = system_time_ns();
        for (i = 0; i < count; i++)
            if (ipstack_udp_send(dst, 40001, (uint16_t)port, blast_buf, (unsigned int)size,
                                 csum) == 0)
                sent++;
        dt = system_time_ns() - t0;
        if (!dt)
            dt = 1;
        printk("udp-blast: sent %lu of %lu datagrams of %lu bytes in %llu us: %llu pps %llu kbit/s\n",
               sent, count, size, dt / 1000, (uint64_t)sent * NSEC_PER_SEC / dt,
               (uint64_t)sent * size * 8 * 1000000ULL / dt);
    } else if (w && strcmp(w, "stats") == 0) {
        if ((w = next_word(&p)) && strcmp(w, "reset") == 0) {
            unsigned long flags = local_irq_save();

            ip_stats.sink_packets = ip_stats.sink_bytes = 0;
            ip_stats.sink_first_ns = ip_stats.sink_last_ns = 0;
            local_irq_restore(flags);
        }
        printk("udp-stats: packets %u bytes %u span %llu us echoed %u bad-csum %u\n",
               ip_stats.sink_packets, ip_stats.sink_bytes,
               (ip_stats.sink_last_ns - ip_stats.sink_first_ns) / 1000, ip_stats.udp_echoed,
               ip_stats.udp_bad_csum);
    } else {
        printk("udp: usage: udp send IP PORT TEXT | udp blast IP PORT SIZE COUNT | "
               "udp stats [reset]\n");
    }
}

/* ---- net: statistics and the hostile-frontend tests ---- */
static void net_stats(void)
{
    unsigned int i;

    for (i = 0; i < NF_MAX_DEVS; i++) {
        struct netfront *nf = netfront_get(i);
        struct netfront_stats *s;

        if (!nf)
            continue;
        netfront_poll(nf);
        s = &nf->stats;
        printk("net: vif%u %s rx %u pkts %u bytes %u err %u csum-blank, "
               "tx %u pkts %u bytes %u err (last %d) %u busy\n", nf->devid,
               nf->connected ? "connected" : "disconnected", s->rx_packets, s->rx_bytes,
               s->rx_errors, s->rx_csum_blank, s->tx_packets, s->tx_bytes, s->tx_errors,
               s->last_tx_status, s->tx_busy);
    }
    printk("net: arp answered %u, icmp echo answered %u, replies seen %u, ip bad %u\n",
           ip_stats.arp_requests_answered, ip_stats.icmp_echo_answered,
           ip_stats.icmp_replies_seen, ip_stats.ip_bad);
}

/*
 * Put raw requests on the TX ring (ids from the free list), as a broken
 * or malicious frontend would.  Returns how many went on.
 */
static unsigned int evil_push(struct netfront *nf, struct netif_tx_request *reqs,
                              unsigned int n, RING_IDX extra_prod)
{
    unsigned long flags = local_irq_save();
    unsigned int i;

    for (i = 0; i < n && nf->nr_tx_free; i++) {
        reqs[i].id = nf->tx_free[--nf->nr_tx_free];
        if (!reqs[i].gref)
            reqs[i].gref = nf->tx_gref[reqs[i].id];
        nf->txs->ring[nf->tx_prod % NET_RING_SIZE].req = reqs[i];
        nf->tx_prod++;
    }
    wmb();
    WRITE_ONCE(nf->txs->h.req_prod, nf->tx_prod + extra_prod);
    mb();
    netfront_kick(nf);
    local_irq_restore(flags);
    return i;
}

static void net_evil(struct netfront *nf, const char *kind)
{
    static struct netif_tx_request reqs[30];
    uint32_t errors = nf->stats.tx_errors;
    unsigned int i, n = 1;
    RING_IDX garbage = 0;

    memset(reqs, 0, sizeof(reqs));
    /* a valid frame to start from: broadcast, our MAC, 60 bytes */
    memset(nf->tx_page[0], 0xff, 6);
    reqs[0].size = 60;
    if (strcmp(kind, "badgref") == 0) {
        reqs[0].gref = 0x7ffffff;               /* far outside our table */
    } else if (strcmp(kind, "shortframe") == 0) {
        reqs[0].size = 4;
    } else if (strcmp(kind, "bigslot") == 0) {
        reqs[0].offset = 4000;                  /* crosses the page end */
        reqs[0].size = 200;
    } else if (strcmp(kind, "manyslots") == 0) {
        n = 30;                                 /* more than XEN_NETIF_NR_SLOTS_MIN */
        reqs[0].size = 30 * 60;
        for (i = 0; i < n; i++) {
            reqs[i].flags = i + 1 < n ? NETTXF_more_data : 0;
            if (i)
                reqs[i].size = 60;
        }
    } else if (strcmp(kind, "ringgarbage") == 0) {
        n = 0;
        garbage = 0x12345;                      /* req_prod far beyond req_cons */
    } else {
        printk("net: usage: net evil badgref|shortframe|bigslot|manyslots|ringgarbage [VIF]\n");
        return;
    }
    i = evil_push(nf, reqs, n, garbage);
    sleep_ms(300);
    netfront_poll(nf);
    printk("net-evil: %s: pushed %u, tx errors +%u, last status %d, %s\n", kind, i,
           nf->stats.tx_errors - errors, nf->stats.last_tx_status,
           nf->connected ? "still connected" : "disconnected");
}

__noinline void cmd_net(const char *args)
{
    char *p = args_copy(args), *w = next_word(&p);
    struct netfront *nf;
    uint32_t dst;

    if (!w || strcmp(w, "stats") == 0) {
        net_stats();
    } else if (strcmp(w, "spoof") == 0) {
        static const uint8_t fake[6] = { 0x00, 0x16, 0x3e, 0xde, 0xad, 0x01 };

        if (!parse_ip(next_word(&p), &dst)) {
            printk("net: usage: net spoof IP\n");
            return;
        }
        printk("net-spoof: %s\n", ipstack_spoof_ping(dst, fake) ? "failed" : "sent");
    } else if (strcmp(w, "hold") == 0) {
        char *onoff = next_word(&p);

        nf = vif_arg(next_word(&p));
        if (!nf || !onoff) {
            printk("net: usage: net hold on|off [VIF]\n");
            return;
        }
        netfront_hold_rx(nf, strcmp(onoff, "on") == 0);
        printk("net-hold: vif%u %s\n", nf->devid, nf->hold_rx ? "on" : "off");
    } else if (strcmp(w, "evil") == 0) {
        char *kind = next_word(&p);

        nf = vif_arg(next_word(&p));
        if (!kind || !nf || !nf->connected) {
            printk("net: usage: net evil KIND [VIF] (on a connected vif)\n");
            return;
        }
        net_evil(nf, kind);
    } else {
        printk("net: usage: net stats | net spoof IP | net hold on|off [VIF] | net evil KIND [VIF]\n");
    }
}
