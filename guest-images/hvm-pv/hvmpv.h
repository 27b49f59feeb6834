/*
 * hvm-pv: what main.c (discovery, hypercalls, events, XenStore) offers
 * blk.c (grant table and blkfront through the HVM hypercall path).
 *
 * The ring and grant structures come from ../lib (our own declarations of
 * the Xen ABI, size-checked there); the HVM-only ones are declared here,
 * checked against shared/xen-abi-i686.md.
 */
#ifndef HVMPV_H
#define HVMPV_H

#include "gnttab.h"
#include "xen-abi.h"
#include "xenstore.h"

#define ALIAS           0xc0000000u
#define V(p)            ((uint32_t)(p) + ALIAS)         /* our alias of a pointer */

#define HC_memory_op            12
#define HC_xen_version          17
#define HC_console_io           18
#define HC_grant_table_op       20
#define HC_sched_op             29
#define HC_event_channel_op     32
#define HC_hvm_op               34

#define XENMEM_add_to_physmap       7
#define XENMAPSPACE_shared_info     0
#define XENMAPSPACE_grant_table     1

struct xen_add_to_physmap {
    uint16_t domid, size;
    uint32_t space, idx, gpfn;
};

struct xen_hvm_param {
    uint16_t domid, pad;
    uint32_t index;
    uint64_t value;
} __attribute__((packed));

struct gnttab_query_size {
    uint16_t dom;
    uint32_t nr_frames, max_nr_frames;
    int16_t status;
};

struct evtchn_close {
    evtchn_port_t port;
};

_Static_assert(sizeof(struct xen_add_to_physmap) == 16, "xen_add_to_physmap");
_Static_assert(sizeof(struct xen_hvm_param) == 16, "xen_hvm_param");
_Static_assert(sizeof(struct gnttab_query_size) == 16, "gnttab_query_size");

size_t strlen(const char *s);
int memcmp(const void *a, const void *b, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
void print(const char *f, ...);
void check(int ok, const char *what);
long hcall(unsigned int nr, uint32_t a1, uint32_t a2, uint32_t a3);
/* Spin (pause) until *what != old; 0 on timeout (about a second or more). */
int wait_for(volatile uint32_t *what, uint32_t old);

/* One XenStore request (XS_READ, XS_DIRECTORY, XS_WRITE: path, then
 * value for a write); the reply's payload in out (NUL-terminated), its
 * length, or -1 (XS_ERROR, no reply, too long). */
int xs_request(uint32_t type, const char *path, const char *value, char *out, uint32_t outlen);

extern volatile uint32_t callbacks;

/* blk.c: frame 0 of our grant table, placed by grant_table_setup() (the
 * grant-table hypercalls' checks); blk_test(): the first disk through
 * blkfront.  net.c: net_test(): the first NIC through netfront (ARP). */
extern struct grant_entry_v1 gnttab_frame0[512];
void grant_table_setup(void);
void blk_test(void);
void net_test(void);

#endif
