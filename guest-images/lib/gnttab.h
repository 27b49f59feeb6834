/*
 * Grant tables, version 1 (grant_table.h): share our pages with another
 * domain, revoke them, and grant copies.
 */
#ifndef GNTTAB_H
#define GNTTAB_H

#include "compiler.h"
#include "hypercall.h"
#include "xen-abi.h"

#define __HYPERVISOR_grant_table_op     20

#define GNTTABOP_setup_table    2
#define GNTTABOP_copy           5
#define GNTTABOP_query_size     6
#define GNTTABOP_set_version    8

typedef uint32_t grant_ref_t;

struct grant_entry_v1 {
    uint16_t flags;
    domid_t  domid;
    uint32_t frame;
};

#define GTF_permit_access       1
#define GTF_readonly            (1U << 2)
#define GTF_reading             (1U << 3)
#define GTF_writing             (1U << 4)
#define GNTTAB_NR_RESERVED_ENTRIES  8

struct gnttab_setup_table {
    domid_t  dom;
    uint32_t nr_frames;
    int16_t  status;
    xen_pfn_t *frame_list;
};

struct gnttab_copy_ptr {
    union {
        grant_ref_t ref;
        xen_pfn_t gmfn;
    } u;
    domid_t  domid;
    uint16_t offset;
};

struct gnttab_copy {
    struct gnttab_copy_ptr source;
    struct gnttab_copy_ptr dest;
    uint16_t len;
    uint16_t flags;
#define GNTCOPY_source_gref     (1U << 0)
#define GNTCOPY_dest_gref       (1U << 1)
    int16_t  status;
};

_Static_assert(sizeof(struct grant_entry_v1) == 8, "grant_entry_v1");
_Static_assert(sizeof(struct gnttab_setup_table) == 16, "gnttab_setup_table");
_Static_assert(sizeof(struct gnttab_copy) == 24, "gnttab_copy");
_Static_assert(__builtin_offsetof(struct gnttab_copy, status) == 20, "gnttab_copy.status");

static inline long hypercall_grant_table_op(unsigned int cmd, void *op, unsigned int count)
{
    return _hypercall(__HYPERVISOR_grant_table_op, cmd, op, count, 0, 0);
}

/* setup_table for one frame and map it; 0 or a negative error/GNTST. */
int gnttab_init(void);

/* Grant dom access to our frame mfn; the reference, or a negative error. */
int gnttab_grant_access(domid_t dom, unsigned long mfn, bool readonly);

/* Revoke: 0, or -EBUSY (16) while the other side still uses it. */
int gnttab_end_access(grant_ref_t ref);

/* The entry as it is now (to show GTF_reading/GTF_writing). */
struct grant_entry_v1 gnttab_entry(grant_ref_t ref);

/* One GNTTABOP_copy; the hypercall's error or the op's GNTST status. */
int gnttab_copy_one(struct gnttab_copy *op);

#endif /* GNTTAB_H */
