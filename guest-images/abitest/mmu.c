/*
 * MMU checks: page types and pinning, the no-writable-page-table rule,
 * PAE L3 rules, the hypervisor slots, mmu_update (all commands, success
 * counts, partial failure, foreign domains), every mmuext_op,
 * update_va_mapping(_otherdomain) with every UVMF flag, and writable page
 * tables (vm_assist).  Expected values are Xen's (xen/arch/x86/mm.c).
 */
#include "abitest.h"

#define RW_FLAGS    (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)
#define RO_FLAGS    (_PAGE_PRESENT | _PAGE_ACCESSED)
#define PT_FLAGS    (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_USER)
#define NOT_MAPPED_VA 0x80000000UL      /* no L2 there in either mode */

/* A frame below 1 MiB that is not ours: the shim's image (0x10000). */
#define LOW_MFN     0x10

static const char *ename(long rc)
{
    switch (rc) {
    case 0: return "0";
    case -XEN_EPERM: return "-EPERM";
    case -XEN_ENOENT: return "-ENOENT";
    case -XEN_ESRCH: return "-ESRCH";
    case -XEN_ENOMEM: return "-ENOMEM";
    case -XEN_EACCES: return "-EACCES";
    case -XEN_EFAULT: return "-EFAULT";
    case -XEN_EBUSY: return "-EBUSY";
    case -XEN_EEXIST: return "-EEXIST";
    case -XEN_ENODEV: return "-ENODEV";
    case -XEN_EINVAL: return "-EINVAL";
    case -XEN_ENOSYS: return "-ENOSYS";
    case -XEN_ETIME: return "-ETIME";
    case -XEN_EOPNOTSUPP: return "-EOPNOTSUPP";
    default: return "other";
    }
}

/* Record a mismatch of a hypercall result. */
#define EXPECT(what, got, want) do {                                        \
        long got_ = (got), want_ = (want);                                  \
        if (got_ != want_)                                                  \
            why("%s = %ld (%s), Xen gives %ld (%s)", (what), got_,          \
                ename(got_), want_, ename(want_));                          \
    } while (0)

/* A fresh page, mapped read-only: ready to become a page table. */
static void *new_table(void)
{
    void *p = alloc_page();

    if (make_ro(p))
        why("could not map a fresh page read-only");
    return p;
}

/* ---- pinning ------------------------------------------------------------ */
static void check_pin_l1(void)
{
    void *l1 = alloc_page();
    unsigned long mfn = vmfn(l1);

    EXPECT("PIN_L1 of a page mapped writable", mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0), -XEN_EINVAL);
    make_ro(l1);
    EXPECT("PIN_L1", mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0), 0);
    EXPECT("PIN_L1 again", mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0), -XEN_EINVAL);
    EXPECT("PIN_L2 of a pinned L1", mmuext(MMUEXT_PIN_L2_TABLE, mfn, 0), -XEN_EINVAL);
    EXPECT("update_va_mapping of the pinned L1 writable", make_rw(l1), -XEN_EBUSY);
    EXPECT("UNPIN", mmuext(MMUEXT_UNPIN_TABLE, mfn, 0), 0);
    EXPECT("UNPIN again", mmuext(MMUEXT_UNPIN_TABLE, mfn, 0), -XEN_EINVAL);
    EXPECT("mapping the unpinned page writable", make_rw(l1), 0);
    EXPECT("PIN_L1 of a frame not owned", mmuext(MMUEXT_PIN_L1_TABLE, foreign_mfn(), 0),
           -XEN_EINVAL);
    EXPECT("UNPIN of a frame not owned", mmuext(MMUEXT_UNPIN_TABLE, foreign_mfn(), 0),
           -XEN_EINVAL);
    /* "Ignore pinning of invalid paging levels" (do_mmuext_op) */
    EXPECT("PIN_L4 (no such level for a 32-bit guest: ignored)",
           mmuext(MMUEXT_PIN_L4_TABLE, mfn, 0), 0);
#ifndef CONFIG_PAE
    EXPECT("PIN_L3 in non-PAE (no such level: ignored)",
           mmuext(MMUEXT_PIN_L3_TABLE, mfn, 0), 0);
#endif
    check_why("mmu-pin-unpin-l1");
}

/* An L1's entries are validated when it is pinned. */
static void check_l1_validation(void)
{
    pte_t *l1 = alloc_page();
    unsigned long mfn = vmfn(l1);
    void *data = alloc_page();
    long rc;

    /* A frame of the hypervisor's: -EBUSY (owned by Xen) or -EPERM (I/O). */
    l1[0] = mk_pte(LOW_MFN, RO_FLAGS);
    make_ro(l1);
    rc = mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0);
    if (rc != -XEN_EPERM && rc != -XEN_EBUSY)
        why("PIN_L1 mapping mfn %#x = %ld (%s), Xen gives -EPERM or -EBUSY", LOW_MFN,
            rc, ename(rc));
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, mfn, 0);

    /* Mapping itself writable: could_not_pin, -EBUSY. */
    make_rw(l1);
    l1[0] = mk_pte(mfn, RW_FLAGS);
    make_ro(l1);
    rc = mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0);
    EXPECT("PIN_L1 of an L1 that maps itself writable", rc, -XEN_EBUSY);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, mfn, 0);

    /* Mapping itself read-only is fine. */
    make_rw(l1);
    l1[0] = mk_pte(mfn, RO_FLAGS);
    l1[1] = mk_pte(vmfn(data), RW_FLAGS);
    make_ro(l1);
    rc = mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0);
    EXPECT("PIN_L1 of an L1 that maps itself read-only", rc, 0);
    if (rc == 0) {
        /* data is now mapped writable twice; fine.  Unpin drops it. */
        EXPECT("UNPIN", mmuext(MMUEXT_UNPIN_TABLE, mfn, 0), 0);
    }

    /* Flags Xen refuses in an L1 of a domU without I/O: PAT/PSE, PCD. */
    make_rw(l1);
    memset(l1, 0, PAGE_SIZE);
    l1[0] = mk_pte(vmfn(data), RO_FLAGS | _PAGE_PSE);
    make_ro(l1);
    rc = mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0);
    EXPECT("PIN_L1 with _PAGE_PAT in an entry", rc, -XEN_EINVAL);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, mfn, 0);
    make_rw(l1);
    l1[0] = mk_pte(vmfn(data), RO_FLAGS | _PAGE_PCD);
    make_ro(l1);
    rc = mmuext(MMUEXT_PIN_L1_TABLE, mfn, 0);
    EXPECT("PIN_L1 with _PAGE_PCD in an entry", rc, -XEN_EINVAL);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, mfn, 0);
    make_rw(l1);
    check_why("mmu-l1-validation");
}

static void check_pin_l2(void)
{
    void *l1 = new_table();
    pte_t *l2 = alloc_page();
    unsigned long l2mfn = vmfn(l2);
    long rc;

    l2[0] = mk_pte(vmfn(l1), PT_FLAGS);
    make_ro(l2);
    rc = mmuext(MMUEXT_PIN_L2_TABLE, l2mfn, 0);
    EXPECT("PIN_L2", rc, 0);
    EXPECT("mapping its L1 writable", make_rw(l1), -XEN_EBUSY);
#ifndef CONFIG_PAE
    /* Non-PAE: every L2 may become a top level: Xen's slots are installed. */
    if (rc == 0 && !l2[FIRST_XEN_L2_SLOT])
        why("a pinned L2 has no hypervisor entries at slot %#x", FIRST_XEN_L2_SLOT);
#endif
    if (rc == 0)
        EXPECT("UNPIN L2", mmuext(MMUEXT_UNPIN_TABLE, l2mfn, 0), 0);
    EXPECT("mapping the L1 writable after the unpin", make_rw(l1), 0);

    /* An L2 entry may not point at a page mapped writable. */
    make_rw(l2);
    l2[0] = mk_pte(vmfn(l1), PT_FLAGS);    /* l1 is writable now */
    make_ro(l2);
    rc = mmuext(MMUEXT_PIN_L2_TABLE, l2mfn, 0);
    EXPECT("PIN_L2 of an L2 pointing at a writable page", rc, -XEN_EINVAL);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, l2mfn, 0);
    make_rw(l2);
    check_why("mmu-pin-l2");
}

/* The current top-level table and its Xen-slot L2 (PAE: the one in L3[3]). */
static pte_t *top_l2(void)
{
#ifdef CONFIG_PAE
    pte_t *l3 = (pte_t *)start_info->pt_base;

    return pfn_to_virt(mfn_to_pfn((unsigned long)((l3[3] & PTE_MFN_MASK) >> PAGE_SHIFT)));
#else
    return (pte_t *)start_info->pt_base;
#endif
}

static unsigned long cur_top_mfn(void)
{
    return vmfn((void *)start_info->pt_base);
}

static bool m2p_reads_ok(void)
{
    unsigned long mfn = vmfn(start_info);

    return mfn_to_pfn(mfn) == virt_to_pfn(start_info);
}

/*
 * A fresh top-level table gets the hypervisor's L2 entries when it is
 * validated; the guest can run on it, and can never write those slots.
 */
static void check_hypervisor_slots(void)
{
    pte_t *cur = top_l2();
    pte_t *fresh = alloc_page();
    unsigned long i, old_top = cur_top_mfn();
    long rc;
#ifdef CONFIG_PAE
    pte_t *l3 = alloc_page(), *cur_l3 = (pte_t *)start_info->pt_base;
    unsigned long top;

    for (i = 0; i < 3; i++)
        l3[i] = cur_l3[i];
    for (i = 0; i < FIRST_XEN_L2_SLOT; i++)
        fresh[i] = cur[i];
    make_ro(fresh);
    l3[3] = mk_pte(vmfn(fresh), _PAGE_PRESENT);
    make_ro(l3);
    top = vmfn(l3);
    rc = mmuext(MMUEXT_PIN_L3_TABLE, top, 0);
    EXPECT("PIN_L3 of a fresh L3 with a fresh L2 in slot 3", rc, 0);
#else
    unsigned long top;

    for (i = 0; i < FIRST_XEN_L2_SLOT; i++)
        fresh[i] = cur[i];
    make_ro(fresh);
    top = vmfn(fresh);
    rc = mmuext(MMUEXT_PIN_L2_TABLE, top, 0);
    EXPECT("PIN_L2 of a fresh top-level L2", rc, 0);
#endif
    if (rc == 0) {
        unsigned int differ = 0;

        for (i = FIRST_XEN_L2_SLOT; i < PTES_PER_PAGE; i++)
            if (fresh[i] != cur[i])
                differ++;
        if (!fresh[FIRST_XEN_L2_SLOT] || differ)
            why("the validated table's hypervisor slots %#x-%#x: %u differ from the "
                "current table's, first %#llx", FIRST_XEN_L2_SLOT, PTES_PER_PAGE - 1,
                differ, (unsigned long long)fresh[FIRST_XEN_L2_SLOT]);
        rc = mmuext(MMUEXT_NEW_BASEPTR, top, 0);
        EXPECT("NEW_BASEPTR to it", rc, 0);
        if (rc == 0) {
            if (!m2p_reads_ok())
                why("the M2P does not read right through the new table");
            EXPECT("NEW_BASEPTR back", mmuext(MMUEXT_NEW_BASEPTR, old_top, 0), 0);
        }
        EXPECT("writing a hypervisor slot of the pinned table",
               mmu_upd(vmaddr(&fresh[FIRST_XEN_L2_SLOT]), fresh[FIRST_XEN_L2_SLOT]),
               -XEN_EPERM);
        EXPECT("UNPIN", mmuext(MMUEXT_UNPIN_TABLE, top, 0), 0);
    }
    EXPECT("writing a hypervisor slot of the current table",
           mmu_upd(vmaddr(&cur[FIRST_XEN_L2_SLOT]), 0), -XEN_EPERM);
    EXPECT("writing the last hypervisor slot of the current table",
           mmu_upd(vmaddr(&cur[PTES_PER_PAGE - 1]), cur[PTES_PER_PAGE - 1]), -XEN_EPERM);
    if (!m2p_reads_ok())
        why("M2P[mfn(start_info)] != pfn(start_info)");
    check_why("mmu-hypervisor-slots");
}

#ifdef CONFIG_PAE
/* PAE: L3 rules for a 32-bit guest (alloc_l3_table, mod_l3_entry). */
static void check_l3(void)
{
    pte_t *cur_l3 = (pte_t *)start_info->pt_base;
    pte_t *l3 = alloc_page(), *l2 = alloc_page();
    unsigned long top = vmfn(l3), old_top = cur_top_mfn();
    long rc;
    int i;

    /* L3[3] must be present (Xen's slots live in its L2). */
    for (i = 0; i < 3; i++)
        l3[i] = cur_l3[i];
    make_ro(l3);
    EXPECT("PIN_L3 with L3[3] not present", mmuext(MMUEXT_PIN_L3_TABLE, top, 0),
           -XEN_EINVAL);

    /* The slot-3 L2 carries Xen's slots: it cannot be used in slot 0-2. */
    make_rw(l3);
    l3[0] = cur_l3[3];
    l3[3] = cur_l3[3];
    make_ro(l3);
    rc = mmuext(MMUEXT_PIN_L3_TABLE, top, 0);
    EXPECT("PIN_L3 with the slot-3 L2 also in slot 0", rc, -XEN_EINVAL);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, top, 0);

    /* L3 entries: no PSE. */
    make_rw(l3);
    l3[0] = cur_l3[0] | _PAGE_PSE;
    make_ro(l3);
    rc = mmuext(MMUEXT_PIN_L3_TABLE, top, 0);
    EXPECT("PIN_L3 with _PAGE_PSE in L3[0]", rc, -XEN_EINVAL);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, top, 0);

    /* A copy of the current L3 pins, runs, and has its own rules. */
    make_rw(l3);
    for (i = 0; i < 4; i++)
        l3[i] = cur_l3[i];
    make_ro(l3);
    rc = mmuext(MMUEXT_PIN_L3_TABLE, top, 0);
    EXPECT("PIN_L3 of a copy of the current L3", rc, 0);
    if (rc == 0) {
        rc = mmuext(MMUEXT_NEW_BASEPTR, top, 0);
        EXPECT("NEW_BASEPTR to the copy", rc, 0);
        if (rc == 0) {
            if (!m2p_reads_ok())
                why("the M2P does not read right on the copy");
            EXPECT("NEW_BASEPTR back", mmuext(MMUEXT_NEW_BASEPTR, old_top, 0), 0);
        }
        EXPECT("mmu_update of L3[3]", mmu_upd(vmaddr(&l3[3]), l3[3]), -XEN_EINVAL);
        /* A free slot (1 GiB-2 GiB is unused) takes a fresh L2 and gives it back. */
        if (!(l3[1] & _PAGE_PRESENT)) {
            make_ro(l2);
            EXPECT("mmu_update of L3[1] with a fresh L2",
                   mmu_upd(vmaddr(&l3[1]), mk_pte(vmfn(l2), _PAGE_PRESENT)), 0);
            EXPECT("mapping that L2 writable", make_rw(l2), -XEN_EBUSY);
            EXPECT("mmu_update of L3[1] back to 0", mmu_upd(vmaddr(&l3[1]), 0), 0);
            EXPECT("mapping the L2 writable again", make_rw(l2), 0);
        }
        EXPECT("UNPIN", mmuext(MMUEXT_UNPIN_TABLE, top, 0), 0);
    }
    EXPECT("mmu_update of the current L3[3]", mmu_upd(vmaddr(&cur_l3[3]), cur_l3[3]),
           -XEN_EINVAL);
    make_rw(l3);
    check_why("mmu-pae-l3");
}
#endif

/* ---- no page is both a page table and writable ---------------------------- */
static void check_no_writable_pagetable(void)
{
    void *l1 = new_table();
    void *scratch = alloc_page();
    unsigned long s = (unsigned long)scratch;
    pte_t orig = *l1e_ptr(s);
    long rc;

    rc = mmuext(MMUEXT_PIN_L1_TABLE, vmfn(l1), 0);
    EXPECT("PIN_L1", rc, 0);
    EXPECT("update_va_mapping(scratch -> pinned L1, RW)",
           set_pte(s, mk_pte(vmfn(l1), RW_FLAGS)), -XEN_EBUSY);
    EXPECT("mmu_update(scratch PTE -> pinned L1, RW)",
           mmu_upd(l1e_maddr(s), mk_pte(vmfn(l1), RW_FLAGS)), -XEN_EBUSY);
    EXPECT("update_va_mapping(scratch -> pinned L1, RO)",
           set_pte(s, mk_pte(vmfn(l1), RO_FLAGS)), 0);
    set_pte(s, orig);
    /* The boot page tables themselves. */
    EXPECT("update_va_mapping(pt_base writable)",
           set_pte(start_info->pt_base, mk_pte(vmfn((void *)start_info->pt_base), RW_FLAGS)),
           -XEN_EBUSY);
    EXPECT("update_va_mapping(an L1 of the boot tables writable)",
           set_pte(s, mk_pte((unsigned long)((l1e_maddr(s)) >> PAGE_SHIFT), RW_FLAGS)),
           -XEN_EBUSY);
    set_pte(s, orig);
    if (rc == 0)
        mmuext(MMUEXT_UNPIN_TABLE, vmfn(l1), 0);
    make_rw(l1);
    check_why("mmu-no-writable-pagetable");
}

/* ---- mmu_update --------------------------------------------------------- */
static void check_mmu_update(void)
{
    uint32_t *s = alloc_page(), *t = alloc_page(), *u = alloc_page();
    unsigned long sva = (unsigned long)s;
    pte_t orig = *l1e_ptr(sva);
    struct mmu_update req[3];
    unsigned int done;
    long rc;

    t[0] = 0x7777;
    u[0] = 0x8888;
    /* NORMAL: the scratch VA now shows t (after the guest's own INVLPG:
     * Xen does not flush the TLB for an L1 update). */
    EXPECT("mmu_update(NORMAL)", mmu_upd(l1e_maddr(sva), mk_pte(vmfn(t), RW_FLAGS)), 0);
    EXPECT("INVLPG_LOCAL", mmuext(MMUEXT_INVLPG_LOCAL, sva, 0), 0);
    if (READ_ONCE(s[0]) != 0x7777)
        why("after NORMAL_PT_UPDATE and INVLPG_LOCAL the VA reads %#x, not t's 0x7777 "
            "(INVLPG_LOCAL did not flush?)", s[0]);
    EXPECT("mmu_update(NORMAL)", mmu_upd(l1e_maddr(sva), mk_pte(vmfn(u), RW_FLAGS)), 0);
    EXPECT("TLB_FLUSH_LOCAL", mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0, 0), 0);
    if (READ_ONCE(s[0]) != 0x8888)
        why("after NORMAL_PT_UPDATE and TLB_FLUSH_LOCAL the VA reads %#x, not u's 0x8888 "
            "(TLB_FLUSH_LOCAL did not flush?)", s[0]);
    mmu_upd(l1e_maddr(sva), mk_pte(vmfn(t), RW_FLAGS));
    mmuext(MMUEXT_INVLPG_LOCAL, sva, 0);

    /* A batch fails at its 2nd entry: done = 1, the 3rd is not applied. */
    req[0].ptr = l1e_maddr(sva);
    req[0].val = mk_pte(vmfn(u), RW_FLAGS);
    req[1].ptr = l1e_maddr(sva);
    req[1].val = mk_pte(LOW_MFN, RW_FLAGS);
    req[2].ptr = l1e_maddr(sva);
    req[2].val = mk_pte(vmfn(t), RW_FLAGS);
    done = 0xdead;
    rc = hypercall_mmu_update(req, 3, &done, DOMID_SELF);
    if (rc != -XEN_EPERM && rc != -XEN_EBUSY)
        why("batch with a bad 2nd entry = %ld (%s), Xen gives -EPERM/-EBUSY", rc, ename(rc));
    if (done != 1)
        why("batch with a bad 2nd entry: done = %u, Xen gives 1", done);
    mmuext(MMUEXT_INVLPG_LOCAL, sva, 0);
    if (READ_ONCE(s[0]) != 0x8888)
        why("after the partial batch (and INVLPG_LOCAL) the VA reads %#x, not u's 0x8888 "
            "(1st entry only)", s[0]);
    done = 0xdead;
    EXPECT("mmu_update(count 0)", hypercall_mmu_update(req, 0, &done, DOMID_SELF), 0);
    if (done != 0)
        why("count 0: done = %u, Xen gives 0", done);
    done = 0xdead;
    EXPECT("mmu_update(3 good entries)", (req[1].val = mk_pte(vmfn(u), RW_FLAGS),
           hypercall_mmu_update(req, 3, &done, DOMID_SELF)), 0);
    if (done != 3)
        why("3 good entries: done = %u", done);

    /* Long batches: Xen preempts them and continues where they stopped
     * (continuations); every entry runs once, done counts them all, and a
     * bad entry late in the batch stops it exactly there. */
    {
        static struct mmu_update big[20000];
        static struct mmuext_op flushes[20000];
        unsigned int n = ARRAY_SIZE(big), k;

        for (k = 0; k < n; k++) {
            big[k].ptr = l1e_maddr(sva);
            big[k].val = mk_pte(vmfn((k & 1) ? t : u), RW_FLAGS);
        }
        done = 0xdead;
        rc = hypercall_mmu_update(big, n, &done, DOMID_SELF);
        if (rc != 0 || done != n)
            why("mmu_update of %u entries = %ld, done = %u", n, rc, done);
        mmuext(MMUEXT_INVLPG_LOCAL, sva, 0);
        if (READ_ONCE(s[0]) != 0x7777)
            why("after the long batch the VA reads %#x, not its last entry's 0x7777", s[0]);
        big[15000].val = mk_pte(LOW_MFN, RW_FLAGS);
        done = 0xdead;
        rc = hypercall_mmu_update(big, n, &done, DOMID_SELF);
        if ((rc != -XEN_EPERM && rc != -XEN_EBUSY) || done != 15000)
            why("long batch, bad entry 15000: rc %ld (%s), done = %u (Xen: 15000)", rc,
                ename(rc), done);
        for (k = 0; k < n; k++)
            flushes[k] = (struct mmuext_op){ .cmd = MMUEXT_TLB_FLUSH_LOCAL };
        done = 0xdead;
        rc = hypercall_mmuext_op(flushes, n, &done, DOMID_SELF);
        if (rc != 0 || done != n)
            why("mmuext_op of %u flushes = %ld, done = %u", n, rc, done);
        mmu_upd(l1e_maddr(sva), mk_pte(vmfn(t), RW_FLAGS));
        mmuext(MMUEXT_INVLPG_LOCAL, sva, 0);
        check_why("mmu-long-batches");
    }

    /* Commands: NO_TRANSLATE is a normal update for PV; unknown ones -ENOSYS. */
    EXPECT("mmu_update(PT_UPDATE_NO_TRANSLATE)",
           mmu_upd(l1e_maddr(sva) | MMU_PT_UPDATE_NO_TRANSLATE, mk_pte(vmfn(u), RW_FLAGS)), 0);
#ifdef CONFIG_PAE
    EXPECT("mmu_update(ptr | 4: command 4)", mmu_upd(l1e_maddr(sva) | 4, orig), -XEN_ENOSYS);
#endif
    /* A plain writable page is just written. */
    EXPECT("mmu_update of a word in a writable data page", mmu_upd(vmaddr(&u[4]), 0x1234), 0);
    if (u[4] != 0x1234)
        why("the data-page update did not write (%#x)", u[4]);
    /* A page the guest does not own. */
    EXPECT("mmu_update into a frame not owned",
           mmu_upd((uint64_t)foreign_mfn() << PAGE_SHIFT, 0), -XEN_EINVAL);
    /* Bad flags in an L1 entry. */
    EXPECT("mmu_update with _PAGE_PAT", mmu_upd(l1e_maddr(sva), mk_pte(vmfn(t), RW_FLAGS | _PAGE_PSE)),
           -XEN_EINVAL);
    EXPECT("mmu_update with an mfn beyond memory",
           mmu_upd(l1e_maddr(sva), mk_pte(0xFFFFF, RW_FLAGS)), -XEN_EPERM);
    EXPECT("restore", mmu_upd(l1e_maddr(sva), orig), 0);
    check_why("mmu-update");

    /* PRESERVE_AD ORs the old A/D bits into the new entry. */
    {
        pte_t e;

        mmu_upd(l1e_maddr(sva), mk_pte(vmfn(t), _PAGE_PRESENT | _PAGE_RW));
        mmuext(MMUEXT_INVLPG_LOCAL, sva, 0);    /* mmu_update does not flush */
        WRITE_ONCE(s[1], 1);                    /* the CPU sets A and D */
        e = *l1e_ptr(sva);
        if ((e & (_PAGE_ACCESSED | _PAGE_DIRTY)) != (_PAGE_ACCESSED | _PAGE_DIRTY))
            why("the CPU did not set A/D (%#llx)", (unsigned long long)e);
        EXPECT("mmu_update(PRESERVE_AD) without A/D",
               mmu_upd(l1e_maddr(sva) | MMU_PT_UPDATE_PRESERVE_AD,
                       mk_pte(vmfn(u), _PAGE_PRESENT | _PAGE_RW)), 0);
        e = *l1e_ptr(sva);
        if ((e & (_PAGE_ACCESSED | _PAGE_DIRTY)) != (_PAGE_ACCESSED | _PAGE_DIRTY) ||
            ((e & PTE_MFN_MASK) >> PAGE_SHIFT) != vmfn(u))
            why("PRESERVE_AD lost the old A/D or the new frame: %#llx",
                (unsigned long long)e);
        /* old without A/D, new with them: Xen keeps the new ones (OR). */
        mmu_upd(l1e_maddr(sva), mk_pte(vmfn(t), _PAGE_PRESENT | _PAGE_RW));
        EXPECT("mmu_update(PRESERVE_AD) with A/D",
               mmu_upd(l1e_maddr(sva) | MMU_PT_UPDATE_PRESERVE_AD,
                       mk_pte(vmfn(t), RW_FLAGS)), 0);
        e = *l1e_ptr(sva);
        if ((e & (_PAGE_ACCESSED | _PAGE_DIRTY)) != (_PAGE_ACCESSED | _PAGE_DIRTY))
            why("PRESERVE_AD dropped the A/D bits of the new value (Xen ORs the old "
                "ones in): %#llx", (unsigned long long)e);
        mmu_upd(l1e_maddr(sva), orig);
        check_why("mmu-update-preserve-ad");
    }

    /* MACHPHYS_UPDATE writes the M2P; not for frames we do not own. */
    {
        unsigned long mfn = vmfn(t), pfn = virt_to_pfn(t);

        EXPECT("MACHPHYS_UPDATE", mmu_upd(((uint64_t)mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE,
                                          0x12345), 0);
        if (mfn_to_pfn(mfn) != 0x12345)
            why("M2P[%#lx] = %#lx after MACHPHYS_UPDATE, not 0x12345", mfn, mfn_to_pfn(mfn));
        EXPECT("MACHPHYS_UPDATE back", mmu_upd(((uint64_t)mfn << PAGE_SHIFT) |
                                               MMU_MACHPHYS_UPDATE, pfn), 0);
        if (mfn_to_pfn(mfn) != pfn)
            why("M2P not restored");
        EXPECT("MACHPHYS_UPDATE of a frame not owned",
               mmu_upd(((uint64_t)foreign_mfn() << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, 0),
               -XEN_EINVAL);
        check_why("mmu-update-machphys");
    }

    /* Foreign domains: only DOMID_SELF is us; naming ourselves is -ESRCH. */
    {
        struct mmu_update r = { .ptr = l1e_maddr(sva), .val = orig };
        struct mmuext_op op = { .cmd = MMUEXT_TLB_FLUSH_LOCAL };

        EXPECT("mmu_update(DOMID_SELF)", hypercall_mmu_update(&r, 1, NULL, DOMID_SELF), 0);
        if (my_domid != DOMID_SELF) {
            EXPECT("mmu_update(foreigndom = own domid)",
                   hypercall_mmu_update(&r, 1, NULL, my_domid), -XEN_ESRCH);
            EXPECT("mmuext_op(foreigndom = own domid)",
                   hypercall_mmuext_op(&op, 1, NULL, my_domid), -XEN_ESRCH);
        }
        EXPECT("mmu_update(foreigndom = 0x7000, no such domain)",
               hypercall_mmu_update(&r, 1, NULL, 0x7000), -XEN_ESRCH);
        if (my_domid != 0 && my_domid != DOMID_SELF)
            EXPECT("mmu_update(foreigndom = 0) from a domU",
                   hypercall_mmu_update(&r, 1, NULL, 0), -XEN_EPERM);
        check_why("mmu-update-foreigndom");
    }
}

/* ---- mmuext_op ---------------------------------------------------------- */
static void check_mmuext_misc(void)
{
    unsigned long mask = 1, va = (unsigned long)start_info;
    struct mmuext_op ops[6] = {
        { .cmd = MMUEXT_TLB_FLUSH_LOCAL },
        { .cmd = MMUEXT_INVLPG_LOCAL, .arg1 = va },
        { .cmd = MMUEXT_TLB_FLUSH_MULTI, .arg2 = (uint32_t)&mask },
        { .cmd = MMUEXT_INVLPG_MULTI, .arg1 = va, .arg2 = (uint32_t)&mask },
        { .cmd = MMUEXT_TLB_FLUSH_ALL },
        { .cmd = MMUEXT_INVLPG_ALL, .arg1 = va },
    };
    unsigned int done = 0xdead, i;

    EXPECT("6 TLB flush ops", hypercall_mmuext_op(ops, 6, &done, DOMID_SELF), 0);
    if (done != 6)
        why("6 TLB flush ops: done = %u", done);
    for (i = 0; i < 6; i++)
        EXPECT("a TLB flush op", hypercall_mmuext_op(&ops[i], 1, NULL, DOMID_SELF), 0);
    EXPECT("TLB_FLUSH_MULTI with a vcpumask in the hole",
           mmuext(MMUEXT_TLB_FLUSH_MULTI, 0, HYPERVISOR_VIRT_START), -XEN_EINVAL);
    EXPECT("INVLPG_MULTI with a vcpumask in the hole",
           mmuext(MMUEXT_INVLPG_MULTI, va, HYPERVISOR_VIRT_START), -XEN_EINVAL);
    check_why("mmuext-tlb-flush");

    EXPECT("FLUSH_CACHE", mmuext(MMUEXT_FLUSH_CACHE, 0, 0), -XEN_EACCES);
    EXPECT("FLUSH_CACHE_GLOBAL", mmuext(MMUEXT_FLUSH_CACHE_GLOBAL, 0, 0), -XEN_EACCES);
    check_why("mmuext-flush-cache");

    EXPECT("MMUEXT cmd 14", mmuext(14, 0, 0), -XEN_ENOSYS);
    EXPECT("MMUEXT_MARK_SUPER", mmuext(MMUEXT_MARK_SUPER, 0, 0), -XEN_EOPNOTSUPP);
    EXPECT("MMUEXT_UNMARK_SUPER", mmuext(MMUEXT_UNMARK_SUPER, 0, 0), -XEN_EOPNOTSUPP);
    EXPECT("MMUEXT cmd 99", mmuext(99, 0, 0), -XEN_ENOSYS);
    {
        /* A batch stops at the failing op. */
        struct mmuext_op b[3] = {
            { .cmd = MMUEXT_TLB_FLUSH_LOCAL }, { .cmd = 99 }, { .cmd = MMUEXT_TLB_FLUSH_LOCAL },
        };

        done = 0xdead;
        EXPECT("batch with a bad 2nd op", hypercall_mmuext_op(b, 3, &done, DOMID_SELF),
               -XEN_ENOSYS);
        if (done != 1)
            why("batch with a bad 2nd op: done = %u, Xen gives 1", done);
    }
    check_why("mmuext-bad-cmd");

    /* NEW_BASEPTR only takes a valid top-level table. */
    {
        void *data = alloc_page();

        EXPECT("NEW_BASEPTR(a writable data page)", mmuext(MMUEXT_NEW_BASEPTR, vmfn(data), 0),
               -XEN_EINVAL);
        EXPECT("NEW_BASEPTR(a frame not owned)", mmuext(MMUEXT_NEW_BASEPTR, foreign_mfn(), 0),
               -XEN_EINVAL);
        EXPECT("NEW_BASEPTR(the current table)", mmuext(MMUEXT_NEW_BASEPTR, cur_top_mfn(), 0), 0);
        check_why("mmuext-new-baseptr");
    }

    /* CLEAR_PAGE / COPY_PAGE */
    {
        uint32_t *t = alloc_page(), *u = alloc_page();
        void *l1 = new_table();
        long rc;

        t[0] = t[1023] = 0x5a5a5a5a;
        u[0] = 0x11;
        u[1023] = 0x22;
        EXPECT("CLEAR_PAGE", mmuext(MMUEXT_CLEAR_PAGE, vmfn(t), 0), 0);
        if (t[0] || t[1023])
            why("CLEAR_PAGE left %#x/%#x", t[0], t[1023]);
        EXPECT("COPY_PAGE", mmuext(MMUEXT_COPY_PAGE, vmfn(t), vmfn(u)), 0);
        if (t[0] != 0x11 || t[1023] != 0x22)
            why("COPY_PAGE gave %#x/%#x", t[0], t[1023]);
        rc = mmuext(MMUEXT_PIN_L1_TABLE, vmfn(l1), 0);
        EXPECT("CLEAR_PAGE of a pinned L1", mmuext(MMUEXT_CLEAR_PAGE, vmfn(l1), 0), -XEN_EINVAL);
        EXPECT("COPY_PAGE to a pinned L1", mmuext(MMUEXT_COPY_PAGE, vmfn(l1), vmfn(u)),
               -XEN_EINVAL);
        EXPECT("COPY_PAGE from a pinned L1", mmuext(MMUEXT_COPY_PAGE, vmfn(t), vmfn(l1)), 0);
        EXPECT("CLEAR_PAGE of a frame not owned", mmuext(MMUEXT_CLEAR_PAGE, foreign_mfn(), 0),
               -XEN_EINVAL);
        EXPECT("COPY_PAGE from a frame not owned",
               mmuext(MMUEXT_COPY_PAGE, vmfn(t), foreign_mfn()), -XEN_EINVAL);
        if (rc == 0)
            mmuext(MMUEXT_UNPIN_TABLE, vmfn(l1), 0);
        check_why("mmuext-clear-copy-page");
    }
}

/* ---- update_va_mapping ------------------------------------------------- */
static void check_update_va_mapping(void)
{
    uint32_t *s = alloc_page(), *t = alloc_page(), *u = alloc_page();
    unsigned long sva = (unsigned long)s, mask = 1;
    pte_t orig = *l1e_ptr(sva);
    static const unsigned long flag_list[] = {
        UVMF_NONE, UVMF_TLB_FLUSH | UVMF_LOCAL, UVMF_INVLPG | UVMF_LOCAL,
        UVMF_TLB_FLUSH | UVMF_ALL, UVMF_INVLPG | UVMF_ALL,
    };
    unsigned int i;
    long rc;

    t[0] = 0x1111;
    u[0] = 0x2222;
    for (i = 0; i < ARRAY_SIZE(flag_list) + 2; i++) {
        unsigned long flags = i < ARRAY_SIZE(flag_list) ? flag_list[i] :
            ((unsigned long)&mask | (i == ARRAY_SIZE(flag_list) ? UVMF_TLB_FLUSH : UVMF_INVLPG));
        uint32_t *target = (i & 1) ? u : t;

        target[0] = 0x5000 + i;     /* a stale TLB entry shows the other page */
        rc = hypercall_update_va_mapping(sva, mk_pte(vmfn(target), RW_FLAGS), flags);
        if (rc)
            why("update_va_mapping(flags %#lx) = %ld (%s)", flags, rc, ename(rc));
        else if (flags != UVMF_NONE && READ_ONCE(s[0]) != target[0])
            why("after update_va_mapping(flags %#lx) the VA reads %#x, not %#x: the TLB "
                "was not flushed", flags, s[0], target[0]);
    }
    rc = hypercall_update_va_mapping(sva, mk_pte(vmfn(t), RW_FLAGS),
                                     HYPERVISOR_VIRT_START | UVMF_INVLPG);
    EXPECT("update_va_mapping(INVLPG|MULTI, vcpumask in the hole)", rc, -XEN_EFAULT);
    EXPECT("update_va_mapping(va in the hole)",
           hypercall_update_va_mapping(HYPERVISOR_VIRT_START, mk_pte(vmfn(t), RO_FLAGS),
                                       UVMF_INVLPG), -XEN_EINVAL);
    EXPECT("update_va_mapping(va without an L2)",
           hypercall_update_va_mapping(NOT_MAPPED_VA, mk_pte(vmfn(t), RO_FLAGS), UVMF_INVLPG),
           -XEN_EINVAL);
    EXPECT("update_va_mapping(mfn beyond memory)",
           hypercall_update_va_mapping(sva, mk_pte(0xFFFFF, RO_FLAGS), UVMF_INVLPG), -XEN_EPERM);
    EXPECT("update_va_mapping(not present)",
           hypercall_update_va_mapping(sva, 0, UVMF_INVLPG), 0);
    EXPECT("restore", set_pte(sva, orig), 0);
    check_why("uvm-flags");

    u[0] = 0x2222;                  /* the loop above wrote 0x5000 + i into it */
    EXPECT("update_va_mapping_otherdomain(DOMID_SELF)",
           hypercall_update_va_mapping_otherdomain(sva, mk_pte(vmfn(u), RW_FLAGS), UVMF_INVLPG,
                                                   DOMID_SELF), 0);
    mmuext(MMUEXT_INVLPG_LOCAL, sva, 0);
    if (READ_ONCE(s[0]) != 0x2222)
        why("update_va_mapping_otherdomain(DOMID_SELF) did not map (%#x)", s[0]);
    if (my_domid != DOMID_SELF)
        EXPECT("update_va_mapping_otherdomain(own domid)",
               hypercall_update_va_mapping_otherdomain(sva, orig, UVMF_INVLPG, my_domid),
               -XEN_ESRCH);
    EXPECT("update_va_mapping_otherdomain(no such domain)",
           hypercall_update_va_mapping_otherdomain(sva, orig, UVMF_INVLPG, 0x7000), -XEN_ESRCH);
    if (my_domid != 0 && my_domid != DOMID_SELF)
        EXPECT("update_va_mapping_otherdomain(domain 0) from a domU",
               hypercall_update_va_mapping_otherdomain(sva, orig, UVMF_INVLPG, 0), -XEN_EPERM);
    EXPECT("restore", set_pte(sva, orig), 0);
    check_why("uvm-otherdomain");
}

/* ---- writable page tables (VMASST_TYPE_writable_pagetables) -------------- */
static struct {
    volatile pte_t *p;
    pte_t val;
} pt_write;

static void do_pt_write(void *arg)
{
    (void)arg;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1:" ::: "memory");
#ifdef CONFIG_PAE
    /* A PAE entry is written as two halves, high first (as Linux does). */
    {
        volatile uint32_t *w = (volatile uint32_t *)pt_write.p;

        w[1] = (uint32_t)(pt_write.val >> 32);
        w[0] = (uint32_t)pt_write.val;
    }
#else
    *pt_write.p = pt_write.val;
#endif
}

#ifdef CONFIG_PAE
static void do_pt_cmpxchg(void *arg)
{
    pte_t old = *pt_write.p, new = pt_write.val;
    uint32_t lo = (uint32_t)old, hi = (uint32_t)(old >> 32);

    (void)arg;
    __asm__ __volatile__ ("lock; cmpxchg8b %2"
                          : "+a" (lo), "+d" (hi), "+m" (*pt_write.p)
                          : "b" ((uint32_t)new), "c" ((uint32_t)(new >> 32))
                          : "memory");
}
#else
static void do_pt_cmpxchg(void *arg)
{
    pte_t old = *pt_write.p;

    (void)arg;
    __asm__ __volatile__ ("lock; cmpxchgl %2, %1"
                          : "+a" (old), "+m" (*pt_write.p)
                          : "r" (pt_write.val) : "memory");
}
#endif

static void check_writable_pagetables(void)
{
    uint32_t *s = alloc_page(), *t = alloc_page(), *u = alloc_page();
    unsigned long sva = (unsigned long)s;
    volatile pte_t *pte = l1e_ptr(sva);
    pte_t orig = *pte;
    void *l1 = new_table();
    long v, pinned;

    t[0] = 0x3333;
    u[0] = 0x4444;
    EXPECT("vm_assist(enable, writable_pagetables)",
           hypercall_vm_assist(VMASST_CMD_enable, VMASST_TYPE_writable_pagetables), 0);
    pt_write.p = pte;
    pt_write.val = mk_pte(vmfn(t), RW_FLAGS);
    v = catch_call(do_pt_write, NULL);
    if (v != -1)
        why("a direct PTE write faulted (vector %ld, error code %#x)", v, catch_rec.frame[0]);
    else if (READ_ONCE(s[0]) != 0x3333)
        why("after the emulated PTE write the VA reads %#x, not 0x3333", s[0]);

    pt_write.val = mk_pte(vmfn(u), RW_FLAGS);
    v = catch_call(do_pt_cmpxchg, NULL);
    if (v != -1)
        why("a locked cmpxchg on a PTE faulted (vector %ld)", v);
    else if (READ_ONCE(s[0]) != 0x4444)
        why("after the emulated cmpxchg the VA reads %#x, not 0x4444", s[0]);

    /* An invalid PTE is refused: the write faults and nothing changes. */
    pinned = mmuext(MMUEXT_PIN_L1_TABLE, vmfn(l1), 0);
    pt_write.val = mk_pte(vmfn(l1), RW_FLAGS);
    v = catch_call(do_pt_write, NULL);
    if (v != X86_EXC_PF)
        why("a direct write mapping a pinned L1 writable: %s, Xen raises #PF",
            v == -1 ? "no fault" : exception_name(v));
    else {
        struct frame f = caught_frame(true);

        if ((f.ec & 3) != 3 || catch_rec.cr2 != (uint32_t)(unsigned long)pte)
            why("#PF error code %#x cr2 %#x, expected 0x3 and %p", f.ec, catch_rec.cr2, pte);
    }
    if ((*pte & PTE_MFN_MASK) >> PAGE_SHIFT != vmfn(u))
        why("the refused write changed the PTE to %#llx", (unsigned long long)*pte);
    if (pinned == 0)
        mmuext(MMUEXT_UNPIN_TABLE, vmfn(l1), 0);

    /* Without the assist, a direct write is a #PF. */
    EXPECT("vm_assist(disable, writable_pagetables)",
           hypercall_vm_assist(VMASST_CMD_disable, VMASST_TYPE_writable_pagetables), 0);
    pt_write.val = mk_pte(vmfn(t), RW_FLAGS);
    v = catch_call(do_pt_write, NULL);
    if (v != X86_EXC_PF)
        why("without writable_pagetables a PTE write gave %s, not #PF",
            v == -1 ? "no fault" : exception_name(v));
    set_pte(sva, orig);
    make_rw(l1);
    check_why("mmu-writable-pagetables");
}

void test_mmu(void)
{
    printk("-- MMU\n");
    check_pin_l1();
    check_l1_validation();
    check_pin_l2();
#ifdef CONFIG_PAE
    check_l3();
#endif
    check_hypervisor_slots();
    check_no_writable_pagetable();
    check_mmu_update();
    check_mmuext_misc();
    check_update_va_mapping();
    check_writable_pagetables();
}
