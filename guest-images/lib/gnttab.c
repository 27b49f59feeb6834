/*
 * Grant tables (see gnttab.h).  Our table is one frame that Xen gives us
 * with setup_table; we map it over a page of our own .bss, as XTF does,
 * and fill entries directly: frame and domid first, then the flags that
 * make the entry valid.  Entries 0..7 are reserved (the builder's console
 * and xenstore grants live there).
 */
#include "console.h"
#include "gnttab.h"
#include "mm.h"

#define NR_ENTRIES      (PAGE_SIZE / sizeof(struct grant_entry_v1))
#define XEN_EBUSY       16
#define XEN_ENOSPC      28

static uint8_t gnttab_page[PAGE_SIZE] __aligned(PAGE_SIZE);
static struct grant_entry_v1 *table;

static inline uint16_t cmpxchg16(volatile uint16_t *p, uint16_t old, uint16_t new)
{
    __asm__ __volatile__ ("lock; cmpxchgw %2, %1"
                          : "+a" (old), "+m" (*p) : "r" (new) : "memory");
    return old;
}

int gnttab_init(void)
{
    xen_pfn_t frame = 0;
    struct gnttab_setup_table setup = {
        .dom = DOMID_SELF, .nr_frames = 1, .frame_list = &frame,
    };
    long rc = hypercall_grant_table_op(GNTTABOP_setup_table, &setup, 1);

    if (rc)
        return (int)rc;
    if (setup.status)
        return setup.status;
    rc = hypercall_update_va_mapping((unsigned long)gnttab_page,
                                     ((uint64_t)frame << PAGE_SHIFT) | _PAGE_PRESENT |
                                     _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY, UVMF_INVLPG);
    if (rc)
        return (int)rc;
    table = (struct grant_entry_v1 *)gnttab_page;
    return 0;
}

int gnttab_grant_access(domid_t dom, unsigned long mfn, bool readonly)
{
    unsigned int ref;

    if (!table) {
        int rc = gnttab_init();

        if (rc)
            return rc;
    }
    for (ref = GNTTAB_NR_RESERVED_ENTRIES; ref < NR_ENTRIES; ref++) {
        if (READ_ONCE(table[ref].flags) == 0) {
            table[ref].frame = (uint32_t)mfn;
            table[ref].domid = dom;
            wmb();      /* valid only once frame and domid are in place */
            WRITE_ONCE(table[ref].flags,
                       GTF_permit_access | (readonly ? GTF_readonly : 0));
            return (int)ref;
        }
    }
    return -XEN_ENOSPC;
}

int gnttab_end_access(grant_ref_t ref)
{
    uint16_t flags, prev;

    if (!table || ref < GNTTAB_NR_RESERVED_ENTRIES || ref >= NR_ENTRIES)
        return -22;
    flags = READ_ONCE(table[ref].flags);
    for (;;) {
        if (flags & (GTF_reading | GTF_writing))
            return -XEN_EBUSY;
        prev = cmpxchg16(&table[ref].flags, flags, 0);
        if (prev == flags)
            return 0;
        flags = prev;
    }
}

struct grant_entry_v1 gnttab_entry(grant_ref_t ref)
{
    struct grant_entry_v1 e = { 0, 0, 0 };

    if (table && ref < NR_ENTRIES)
        e = table[ref];
    return e;
}

int gnttab_copy_one(struct gnttab_copy *op)
{
    long rc = hypercall_grant_table_op(GNTTABOP_copy, op, 1);

    return rc ? (int)rc : op->status;
}
