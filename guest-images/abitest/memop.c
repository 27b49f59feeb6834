/*
 * memory_op: the memory map, the M2P's location and frames, reservation
 * sizes, and giving frames back and getting new ones (decrease/increase
 * reservation, populate_physmap, exchange) with the M2P and P2M kept
 * consistent as the guest sees them.  Expected values are Xen's
 * (common/memory.c, arch/x86/x86_64/compat/mm.c for a 32-bit guest).
 */
#include "abitest.h"

#define RW_FLAGS    (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)
#define INVALID_MFN_ENTRY 0xFFFFFFFFUL

static uint32_t *p2m(void)
{
    return (uint32_t *)start_info->mfn_list;
}

static void check_memory_map(void)
{
    struct e820_entry e[4];
    struct xen_memory_map map = { .nr_entries = 4, .buffer = (uint32_t)e };
    long rc;

    memset(e, 0xff, sizeof(e));
    rc = hypercall_memory_op(XENMEM_memory_map, &map);
    if (rc)
        why("memory_map = %ld", rc);
    else if (map.nr_entries < 1 || e[0].type != 1 || e[0].addr != 0 ||
             e[0].size < (uint64_t)start_info->nr_pages << PAGE_SHIFT)
        why("memory_map: %u entries, first {%#llx, %#llx, type %u}: a PV domU gets one "
            "RAM entry from 0 covering its memory", map.nr_entries,
            (unsigned long long)e[0].addr, (unsigned long long)e[0].size, e[0].type);
    map.nr_entries = 0;
    rc = hypercall_memory_op(XENMEM_memory_map, &map);
    if (rc || map.nr_entries != 0)
        why("memory_map with room for 0 entries = %ld, nr_entries %u; Xen gives 0, 0",
            rc, map.nr_entries);
    check_why("memop-memory-map");
}

static void check_machphys(void)
{
    struct xen_machphys_mapping mp;
    unsigned long list[64], max_ram;
    struct xen_machphys_mfn_list ml = { .max_extents = 64, .extent_start = (uint32_t)list };
    long rc;
    unsigned int i;

    memset(&mp, 0, sizeof(mp));
    max_ram = hypercall_memory_op(XENMEM_maximum_ram_page, NULL);
    rc = hypercall_memory_op(XENMEM_machphys_mapping, &mp);
    if (rc)
        why("machphys_mapping = %ld", rc);
    else {
        if (mp.v_start != MACH2PHYS_VIRT_START)
            why("machphys_mapping v_start %#x, expected %#lx", mp.v_start,
                MACH2PHYS_VIRT_START);
        if (mp.v_end <= mp.v_start || ((uint64_t)mp.max_mfn + 1) * 4 > mp.v_end - mp.v_start)
            why("machphys_mapping v_end %#x / max_mfn %#x inconsistent", mp.v_end, mp.max_mfn);
        if (mp.max_mfn + 1 < max_ram)
            why("machphys_mapping max_mfn %#x below maximum_ram_page %#lx", mp.max_mfn,
                max_ram);
    }
    check_why("memop-machphys-mapping");

    memset(list, 0, sizeof(list));
    rc = hypercall_memory_op(XENMEM_machphys_mfn_list, &ml);
    if (rc)
        why("machphys_mfn_list = %ld", rc);
    else if (ml.nr_extents < 1 || ml.nr_extents > 64 || ml.max_extents != 64)
        why("machphys_mfn_list returned %u extents (max_extents now %u)", ml.nr_extents,
            ml.max_extents);
    else
        for (i = 0; i < ml.nr_extents; i++) {
            unsigned long pfn = mfn_to_pfn(list[i]);

            /* Hypervisor frames: not in our P2M. */
            if (!list[i] || (pfn < start_info->nr_pages && p2m()[pfn] == list[i]))
                why("M2P extent %u is mfn %#lx (ours?)", i, list[i]);
        }
    ml.max_extents = 0;
    ml.nr_extents = 99;
    rc = hypercall_memory_op(XENMEM_machphys_mfn_list, &ml);
    if (rc || ml.nr_extents)
        why("machphys_mfn_list with room for 0 = %ld, %u extents", rc, ml.nr_extents);
    check_why("memop-machphys-mfn-list");
}

static void check_reservation(void)
{
    domid_t self = DOMID_SELF;
    long cur = hypercall_memory_op(XENMEM_current_reservation, &self);
    long max = hypercall_memory_op(XENMEM_maximum_reservation, &self);
    long ram = hypercall_memory_op(XENMEM_maximum_ram_page, NULL);
    long gpfn = hypercall_memory_op(XENMEM_maximum_gpfn, &self);
    unsigned long i, max_pfn = shared_info->arch.max_pfn;
    domid_t other;

    if (cur != (long)start_info->nr_pages)
        why("current_reservation = %ld, start_info nr_pages %u", cur, start_info->nr_pages);
    if (max < cur)
        why("maximum_reservation %ld < current %ld", max, cur);
    if (ram <= 0)
        why("maximum_ram_page = %ld", ram);
    for (i = 0; i < start_info->nr_pages && ram > 0; i++)
        if (p2m()[i] >= (unsigned long)ram) {
            why("pfn %#lx has mfn %#x beyond maximum_ram_page %#lx", i, p2m()[i], ram);
            break;
        }
    /* PV: domain_get_maximum_gpfn() = (shared_info.arch.max_pfn ?: 1) - 1 */
    if (gpfn != (long)((max_pfn ? max_pfn : 1) - 1))
        why("maximum_gpfn = %ld, Xen gives shared_info max_pfn (%lu) - 1", gpfn, max_pfn);
    other = 0x7000;
    if (hypercall_memory_op(XENMEM_current_reservation, &other) != -XEN_ESRCH)
        why("current_reservation(no such domain) = %ld, Xen gives -ESRCH",
            hypercall_memory_op(XENMEM_current_reservation, &other));
    if (my_domid != 0 && my_domid != DOMID_SELF) {
        other = 0;
        if (hypercall_memory_op(XENMEM_current_reservation, &other) != -XEN_EPERM)
            why("current_reservation(domain 0) from a domU = %ld, Xen gives -EPERM",
                hypercall_memory_op(XENMEM_current_reservation, &other));
        other = my_domid;
        if (hypercall_memory_op(XENMEM_current_reservation, &other) != cur)
            why("current_reservation(own domid) = %ld, not %ld",
                hypercall_memory_op(XENMEM_current_reservation, &other), cur);
    }
    check_why("memop-reservation-sizes");
}

static long current_pages(void)
{
    domid_t self = DOMID_SELF;

    return hypercall_memory_op(XENMEM_current_reservation, &self);
}

/* Give the frame behind `page` back to Xen: 1 on success. */
static long give_back(void *page, unsigned long *old_mfn)
{
    unsigned long mfn = vmfn(page);
    unsigned long list[1] = { mfn };
    struct xen_memory_reservation r = {
        .extent_start = (uint32_t)list, .nr_extents = 1, .domid = DOMID_SELF,
    };
    long rc;

    *old_mfn = mfn;
    set_pte((unsigned long)page, 0);            /* no mapping may hold it */
    rc = hypercall_memory_op(XENMEM_decrease_reservation, &r);
    if (rc != 1)
        set_pte((unsigned long)page, mk_pte(mfn, RW_FLAGS));
    return rc;
}

/* Map `mfn` as pfn(page) and make the P2M and M2P agree. */
static void adopt(void *page, unsigned long mfn, bool m2p_set_by_xen)
{
    unsigned long pfn = virt_to_pfn(page);
    long rc;

    if (m2p_set_by_xen && mfn_to_pfn(mfn) != pfn)
        why("M2P[new mfn %#lx] = %#lx, Xen sets it to the gpfn %#lx", mfn,
            mfn_to_pfn(mfn), pfn);
    rc = mmu_upd(((uint64_t)mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, pfn);
    if (rc)
        why("MACHPHYS_UPDATE of the new frame = %ld", rc);
    p2m()[pfn] = mfn;
    rc = set_pte((unsigned long)page, mk_pte(mfn, RW_FLAGS));
    if (rc)
        why("mapping the new frame = %ld", rc);
    else {
        ((volatile uint32_t *)page)[0] = 0xfeedf00d;
        if (((volatile uint32_t *)page)[0] != 0xfeedf00d)
            why("the new frame does not hold data");
    }
    if (mfn_to_pfn(p2m()[pfn]) != pfn)
        why("P2M/M2P disagree for pfn %#lx", pfn);
}

static void check_reservation_ops(void)
{
    void *g = alloc_page();
    unsigned long old, list[1];
    struct xen_memory_reservation r = {
        .extent_start = (uint32_t)list, .nr_extents = 1, .domid = DOMID_SELF,
    };
    long before = current_pages(), rc;

    /* decrease_reservation then increase_reservation */
    rc = give_back(g, &old);
    if (rc != 1) {
        why("decrease_reservation(1 extent) = %ld, Xen gives 1", rc);
    } else {
        if (current_pages() != before - 1)
            why("current_reservation %ld after giving one back (was %ld)", current_pages(),
                before);
        if (set_pte((unsigned long)g, mk_pte(old, RW_FLAGS)) == 0) {
            why("the frame given back can still be mapped");
            set_pte((unsigned long)g, 0);
        }
        list[0] = 0;
        rc = hypercall_memory_op(XENMEM_increase_reservation, &r);
        if (rc != 1 || !list[0]) {
            why("increase_reservation(1 extent) = %ld, mfn %#lx", rc, list[0]);
        } else {
            adopt(g, list[0], false);
            if (current_pages() != before)
                why("current_reservation %ld after increase, not %ld", current_pages(), before);
        }
    }
    check_why("memop-decrease-increase-reservation");

    /* decrease_reservation then populate_physmap into the same gpfn */
    rc = give_back(g, &old);
    if (rc != 1) {
        why("decrease_reservation = %ld", rc);
    } else {
        list[0] = virt_to_pfn(g);
        rc = hypercall_memory_op(XENMEM_populate_physmap, &r);
        if (rc != 1 || list[0] == virt_to_pfn(g))
            why("populate_physmap(gpfn %#lx) = %ld, extent now %#lx (Xen writes the mfn)",
                virt_to_pfn(g), rc, list[0]);
        else
            adopt(g, list[0], true);
    }
    check_why("memop-populate-physmap");

    /* exchange one frame for another */
    {
        unsigned long in[1], out[1];
        struct xen_memory_exchange x = {
            .in = { .extent_start = (uint32_t)in, .nr_extents = 1, .domid = DOMID_SELF },
            .out = { .extent_start = (uint32_t)out, .nr_extents = 1, .domid = DOMID_SELF },
        };

        in[0] = vmfn(g);
        out[0] = virt_to_pfn(g);
        old = in[0];
        set_pte((unsigned long)g, 0);
        rc = hypercall_memory_op(XENMEM_exchange, &x);
        if (rc != 0 || x.nr_exchanged != 1 || out[0] == virt_to_pfn(g)) {
            why("exchange = %ld, nr_exchanged %u, out mfn %#lx (old %#lx)", rc,
                x.nr_exchanged, out[0], old);
            set_pte((unsigned long)g, mk_pte(old, RW_FLAGS));
        } else {
            /* (Xen allocates before it frees, so the frame is always a new
             * one; the ABI only promises a frame.) */
            if (out[0] != old && set_pte((unsigned long)g, mk_pte(old, RW_FLAGS)) == 0)
                why("the exchanged-away frame %#lx can still be mapped", old);
            adopt(g, out[0], true);
        }
    }
    check_why("memop-exchange");
}

void test_memop(void)
{
    printk("-- memory_op\n");
    check_memory_map();
    check_machphys();
    check_reservation();
    check_reservation_ops();
}
