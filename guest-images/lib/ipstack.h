/*
 * A minimal IPv4 stack on netfront: ARP (answers, resolves, caches),
 * ICMP echo (answers pings, sends them), UDP echo on port 7, a UDP
 * discard counter on port 9, and UDP send with one reply.  Enough to be
 * pinged and to echo datagrams; no fragments, no routing beyond the
 * interface's own subnet.
 */
#ifndef IPSTACK_H
#define IPSTACK_H

#include "compiler.h"
#include "netfront.h"

#define UDP_ECHO_PORT       7
#define UDP_DISCARD_PORT    9

struct ip_stats {
    uint32_t arp_requests_answered, arp_replies_seen;
    uint32_t icmp_echo_answered, icmp_replies_seen;
    uint32_t udp_echoed, udp_bad_csum, ip_bad;
    uint32_t sink_packets, sink_bytes;
    uint64_t sink_first_ns, sink_last_ns;
};

extern struct ip_stats ip_stats;

/* The rx callback to give netfront. */
void ipstack_input(struct netfront *nf, const uint8_t *frame, unsigned int len,
                   unsigned int rxflags);

/* A new interface: its address from the back end's "ip" key (or none). */
void ipstack_attach(struct netfront *nf);

/* Address of interface nf (0: none), and setting it ("a.b.c.d[/n]"). */
uint32_t ipstack_addr(const struct netfront *nf, uint32_t *mask);
int ipstack_set(struct netfront *nf, const char *text);

/* Dotted quad <-> host-order address. */
bool ip_parse(const char *s, uint32_t *ip, int *prefix);
void ip_format(uint32_t ip, char *buf, size_t size);

/* The interface whose subnet holds dst (or the first with an address). */
struct netfront *ipstack_route(uint32_t dst);

/* Resolve dst's MAC (ARP), waiting up to timeout_ns.  0 or -1. */
int arp_resolve(struct netfront *nf, uint32_t dst, uint8_t mac[6], uint64_t timeout_ns);

/* One echo request; 0 with *rtt_ns, or -1 on timeout. */
int ipstack_ping(uint32_t dst, uint16_t seq, unsigned int size, uint64_t timeout_ns,
                 uint64_t *rtt_ns);

/*
 * Send a datagram from sport to dst:dport (csum_offload: leave the UDP
 * checksum to the back end, NETTXF_csum_blank).  0 or -1.
 */
int ipstack_udp_send(uint32_t dst, uint16_t sport, uint16_t dport, const void *data,
                     unsigned int len, bool csum_offload);

/* Take the next datagram to port (0: none) from now on: call it before the
 * send whose answer ipstack_udp_wait() is to get, which may arrive first. */
void ipstack_udp_listen(uint16_t port);

/* Wait for a datagram to port; its length (payload copied), or -1. */
int ipstack_udp_wait(uint16_t port, void *buf, unsigned int size, uint32_t *from,
                     uint64_t timeout_ns);

/*
 * Testing: send an echo request to dst whose Ethernet source is fake_mac
 * (the back end must drop it).  0 if it went onto the ring.
 */
int ipstack_spoof_ping(uint32_t dst, const uint8_t fake_mac[6]);

#endif /* IPSTACK_H */
