/*
 * isolation: a hostile guest.  One by one it tries to map frames it does
 * not own (the first MiB, the hypervisor's own page tables and M2P,
 * frames beyond memory), to make a page table writable, to install
 * ring-0 descriptors and call gates into ring 0, and to pass bad pointers,
 * huge counts, unaligned addresses and out-of-range ports to the
 * hypercalls.  Each attempt must get Xen's error code; afterwards the
 * hypervisor must still be intact.  (shimwrite/ probes the shim's memory
 * directly; this guest goes through the hypercall interface.)
 *
 * Output: "check <name>: ok|FAIL <why>", then "Test result: ...".
 */
#include <stdarg.h>

#include "xenguest.h"
#include "hypercall-ext.h"

#define RW_FLAGS    (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)
#define RO_FLAGS    (_PAGE_PRESENT | _PAGE_ACCESSED)
#define BAD_PTR     HYPERVISOR_VIRT_START       /* readable M2P, never a guest buffer */
#define UNMAPPED    0x0DEAD000UL
#define HUGE        0x7FFFFFFFU

static unsigned int failed;
static char why_buf[768];
static size_t why_len;

static void why(const char *fmt, ...) __printf(1, 2);
static void why(const char *fmt, ...)
{
    va_list ap;

    if (why_len && why_len < sizeof(why_buf) - 2) {
        why_buf[why_len++] = ';';
        why_buf[why_len++] = ' ';
    }
    va_start(ap, fmt);
    if (why_len < sizeof(why_buf))
        why_len += vsnprintf(why_buf + why_len, sizeof(why_buf) - why_len, fmt, ap);
    va_end(ap);
    if (why_len >= sizeof(why_buf))
        why_len = sizeof(why_buf) - 1;
}

static void check_done(const char *name)
{
    if (why_len) {
        failed++;
        printk("check %s: FAIL %s\n", name, why_buf);
    } else {
        printk("check %s: ok\n", name);
    }
    why_len = 0;
    why_buf[0] = '\0';
}

#define EXPECT(what, got, want) do {                                        \
        long got_ = (got), want_ = (want);                                  \
        if (got_ != want_)                                                  \
            why("%s = %ld, Xen gives %ld", (what), got_, want_);            \
    } while (0)

/* A refused mapping: -EPERM (not RAM / I/O) or -EBUSY (another owner). */
#define EXPECT_REFUSED(what, got) do {                                      \
        long got_ = (got);                                                  \
        if (got_ != -XEN_EPERM && got_ != -XEN_EBUSY)                       \
            why("%s = %ld, Xen refuses with -EPERM or -EBUSY", (what), got_); \
    } while (0)

static pte_t mk_pte(unsigned long mfn, unsigned int flags)
{
    return ((pte_t)mfn << PAGE_SHIFT) | flags;
}

static uint8_t scratch[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t fence[2][PAGE_SIZE] __aligned(PAGE_SIZE);   /* [1] is unmapped */
static uint8_t *fence_page = fence[0];
static uint8_t buf[PAGE_SIZE] __aligned(PAGE_SIZE);

static unsigned long sva(void)
{
    return (unsigned long)scratch;
}

static long map_at_scratch(unsigned long mfn, unsigned int flags)
{
    long rc = hypercall_update_va_mapping(sva(), mk_pte(mfn, flags), UVMF_INVLPG);

    if (rc == 0)        /* put ours back */
        hypercall_update_va_mapping(sva(), mk_pte(virt_to_mfn(scratch), RW_FLAGS), UVMF_INVLPG);
    return rc;
}

static void *table_va(pte_t e)
{
    return pfn_to_virt(mfn_to_pfn((unsigned long)((e & PTE_MFN_MASK) >> PAGE_SHIFT)));
}

/* The L2 holding Xen's slots, as the guest sees it (read-only, 1:1). */
static pte_t *top_l2(void)
{
#ifdef CONFIG_PAE
    return table_va(((pte_t *)start_info->pt_base)[3]);
#else
    return (pte_t *)start_info->pt_base;
#endif
}

static uint64_t l1e_maddr(unsigned long va)
{
    pte_t *l2, *l1;

#ifdef CONFIG_PAE
    l2 = table_va(((pte_t *)start_info->pt_base)[va >> 30]);
    l1 = table_va(l2[(va >> 21) & 511]);
    l1 += (va >> 12) & 511;
#else
    l2 = (pte_t *)start_info->pt_base;
    l1 = table_va(l2[va >> 22]);
    l1 += (va >> 12) & 1023;
#endif
    return ((uint64_t)virt_to_mfn(l1) << PAGE_SHIFT) | ((unsigned long)l1 & 0xfff);
}

/* Hypervisor frames the guest can name: the hole's L1 tables and the M2P. */
static unsigned long xen_frames[64];
static unsigned int nr_xen_frames;

static void find_xen_frames(void)
{
    pte_t *l2 = top_l2();
    unsigned long list[16];
    struct xen_machphys_mfn_list ml = { .max_extents = 16, .extent_start = (uint32_t)list };
    unsigned int i;

    for (i = FIRST_XEN_L2_SLOT; i < PTES_PER_PAGE && nr_xen_frames < 48; i++)
        if (l2[i] & _PAGE_PRESENT)
            xen_frames[nr_xen_frames++] = (unsigned long)((l2[i] & PTE_MFN_MASK) >> PAGE_SHIFT);
    if (hypercall_memory_op(XENMEM_machphys_mfn_list, &ml) == 0)
        for (i = 0; i < ml.max_extents && i < 16; i++)
            xen_frames[nr_xen_frames++] = list[i];
    printk("isolation: %u hypervisor frames found (hole L1s and M2P)\n", nr_xen_frames);
}

static void check_map_low(void)
{
    unsigned long mfn;
    struct mmu_update u;
    long rc;

    for (mfn = 0; mfn < 0x100; mfn++) {
        rc = map_at_scratch(mfn, RO_FLAGS);
        if (rc != -XEN_EPERM && rc != -XEN_EBUSY)
            why("map mfn %#lx read-only = %ld", mfn, rc);
        rc = map_at_scratch(mfn, RW_FLAGS);
        if (rc != -XEN_EPERM && rc != -XEN_EBUSY)
            why("map mfn %#lx writable = %ld", mfn, rc);
        u.ptr = l1e_maddr(sva());
        u.val = mk_pte(mfn, RW_FLAGS);
        rc = hypercall_mmu_update(&u, 1, NULL, DOMID_SELF);
        if (rc != -XEN_EPERM && rc != -XEN_EBUSY) {
            why("mmu_update mapping mfn %#lx = %ld", mfn, rc);
            hypercall_update_va_mapping(sva(), mk_pte(virt_to_mfn(scratch), RW_FLAGS),
                                        UVMF_INVLPG);
        }
        if (why_len > 400)
            break;
    }
    check_done("map-low-mfns");
}

static void check_map_xen(void)
{
    unsigned int i;
    long max_ram = hypercall_memory_op(XENMEM_maximum_ram_page, NULL);

    if (!nr_xen_frames)
        why("no hypervisor frame found to try");
    for (i = 0; i < nr_xen_frames; i++) {
        EXPECT_REFUSED("map a hypervisor frame read-only", map_at_scratch(xen_frames[i], RO_FLAGS));
        EXPECT_REFUSED("map a hypervisor frame writable", map_at_scratch(xen_frames[i], RW_FLAGS));
    }
    check_done("map-hypervisor-frames");

    /* Frames beyond memory are not RAM: -EPERM (no I/O memory for a domU). */
    for (i = 0; i < 8; i++) {
        unsigned long mfn = (unsigned long)max_ram + i * 97 + 1;

        EXPECT("map a frame beyond memory", map_at_scratch(mfn, RO_FLAGS), -XEN_EPERM);
    }
    EXPECT("map mfn 0xFFFFF", map_at_scratch(0xFFFFF, RW_FLAGS), -XEN_EPERM);
    check_done("map-foreign-frames");
}

static void check_pagetables(void)
{
    unsigned int i;
    struct mmu_update u;

    for (i = 0; i < start_info->nr_pt_frames; i++) {
        unsigned long mfn = virt_to_mfn((void *)(start_info->pt_base + i * PAGE_SIZE));

        EXPECT("update_va_mapping of a page table writable", map_at_scratch(mfn, RW_FLAGS),
               -XEN_EBUSY);
        u.ptr = l1e_maddr(sva());
        u.val = mk_pte(mfn, RW_FLAGS);
        EXPECT("mmu_update mapping a page table writable",
               hypercall_mmu_update(&u, 1, NULL, DOMID_SELF), -XEN_EBUSY);
        EXPECT("update_va_mapping of a page table in place, writable",
               hypercall_update_va_mapping(start_info->pt_base + i * PAGE_SIZE,
                                           mk_pte(mfn, RW_FLAGS), UVMF_INVLPG), -XEN_EBUSY);
    }
    check_done("map-pagetable-writable");
}

static long mmuext1(unsigned int cmd, unsigned long a1, unsigned long a2)
{
    struct mmuext_op op = { cmd, a1, a2 };

    return hypercall_mmuext_op(&op, 1, NULL, DOMID_SELF);
}

static void check_pin_foreign(void)
{
    unsigned int i;

    for (i = 0; i < nr_xen_frames; i++) {
        unsigned long m = xen_frames[i];
        struct mmu_update u = { ((uint64_t)m << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, 0 };
        struct mmu_update w = { (uint64_t)m << PAGE_SHIFT, 0 };

        EXPECT("PIN_L1 of a hypervisor frame", mmuext1(MMUEXT_PIN_L1_TABLE, m, 0), -XEN_EINVAL);
        EXPECT("PIN_L2 of a hypervisor frame", mmuext1(MMUEXT_PIN_L2_TABLE, m, 0), -XEN_EINVAL);
#ifdef CONFIG_PAE
        EXPECT("PIN_L3 of a hypervisor frame", mmuext1(MMUEXT_PIN_L3_TABLE, m, 0), -XEN_EINVAL);
#endif
        EXPECT("UNPIN of a hypervisor frame", mmuext1(MMUEXT_UNPIN_TABLE, m, 0), -XEN_EINVAL);
        EXPECT("NEW_BASEPTR to a hypervisor frame", mmuext1(MMUEXT_NEW_BASEPTR, m, 0), -XEN_EINVAL);
        EXPECT("CLEAR_PAGE of a hypervisor frame", mmuext1(MMUEXT_CLEAR_PAGE, m, 0), -XEN_EINVAL);
        EXPECT("COPY_PAGE from a hypervisor frame",
               mmuext1(MMUEXT_COPY_PAGE, virt_to_mfn(buf), m), -XEN_EINVAL);
        EXPECT("MACHPHYS_UPDATE of a hypervisor frame",
               hypercall_mmu_update(&u, 1, NULL, DOMID_SELF), -XEN_EINVAL);
        EXPECT("mmu_update writing into a hypervisor frame",
               hypercall_mmu_update(&w, 1, NULL, DOMID_SELF), -XEN_EINVAL);
        EXPECT("update_descriptor into a hypervisor frame",
               hypercall_update_descriptor((uint64_t)m << PAGE_SHIFT, 0), -XEN_EINVAL);
        if (why_len > 500)
            break;
    }
    check_done("pin-foreign");
}

/* ---- descriptors ---------------------------------------------------------- */
static uint64_t call_gate(uint16_t sel, uint32_t off, unsigned int dpl, unsigned int type)
{
    uint32_t lo = (off & 0xffff) | ((uint32_t)sel << 16);
    uint32_t hi = (off & 0xffff0000) | 0x8000 | (dpl << 13) | (type << 8);

    return ((uint64_t)hi << 32) | lo;
}

static uint64_t *gdt;
static unsigned long gdt_frames[1];

/* ljmp to sel (RPL 0 allowed: RPL <= CPL), read CS, ljmp back to ring-1 code. */
static bool far_jump_ring(uint16_t sel, unsigned int *cpl)
{
    static struct { uint32_t off; uint16_t sel; } __attribute__((packed)) there, back;
    uint32_t cs;

    there.sel = sel;
    back.sel = FLAT_KERNEL_CS;
    __asm__ __volatile__ ("movl $1f, %1\n\t"
                          "movl $2f, %2\n\t"
                          "ljmp *%1\n"
                          "1: movl %%cs, %0\n\t"
                          "ljmp *%2\n"
                          "2:"
                          : "=&r" (cs), "+m" (there), "+m" (back) :: "memory");
    *cpl = cs & 3;
    return true;
}

static void check_descriptors(void)
{
    static const uint16_t xen_sels[] = { 0xe008, 0xe010, 0xe018, 0xe020, 0xe028, 0xe030,
                                         0xe038, 0xe040, 0xe048, 0xfff8 };
    uint64_t ma;
    unsigned int i, cpl;
    long rc;

    gdt = (uint64_t *)buf;
    memset(gdt, 0, PAGE_SIZE);
    hypercall_update_va_mapping((unsigned long)gdt, mk_pte(virt_to_mfn(gdt), RO_FLAGS),
                                UVMF_INVLPG);
    gdt_frames[0] = virt_to_mfn(gdt);
    rc = hypercall_set_gdt(gdt_frames, 512);
    if (rc) {
        why("set_gdt of a clean page = %ld", rc);
        check_done("descriptor-ring0-gate");
        return;
    }
    ma = ((uint64_t)gdt_frames[0] << PAGE_SHIFT) + 8 * 8;
    /* Call gates whose target is one of Xen's own selectors: refused. */
    for (i = 0; i < ARRAY_SIZE(xen_sels); i++) {
        rc = hypercall_update_descriptor(ma, call_gate(xen_sels[i], 0x1000, 3, 0xc));
        if (rc != -XEN_EINVAL)
            why("call gate to %#x = %ld, Xen gives -EINVAL", xen_sels[i], rc);
    }
    /* A ring-0 code segment becomes ring 1: a far jump to it stays in ring 1. */
    rc = hypercall_update_descriptor(ma, ((uint64_t)0x00cf9b00 << 32) | 0x0000ffff);
    if (rc)
        why("update_descriptor(ring-0 code) = %ld, Xen fixes it up to DPL 1", rc);
    else if (((gdt[8] >> 45) & 3) != 1)
        why("ring-0 code stored with DPL %u", (unsigned int)((gdt[8] >> 45) & 3));
    else if (far_jump_ring(8 * 8, &cpl) && cpl != 1)
        why("far jump to the fixed-up ring-0 code ran at CPL %u", cpl);
    hypercall_update_descriptor(ma, 0);
    /* A gate with DPL 3 to ring 1 is kept, with DPL 0 so every use faults. */
    rc = hypercall_update_descriptor(ma, call_gate(FLAT_KERNEL_CS, 0x1000, 3, 0xc));
    if (rc || ((gdt[8] >> 45) & 3) != 0)
        why("call gate to ring 1 = %ld, stored DPL %u (Xen forces 0)", rc,
            (unsigned int)((gdt[8] >> 45) & 3));
    hypercall_update_descriptor(ma, 0);
    check_done("descriptor-ring0-gate");

    {
        static const struct { const char *what; uint64_t d; } bad[] = {
            { "16-bit call gate", 0 }, { "task gate", 0 }, { "interrupt gate", 0 },
            { "trap gate", 0 }, { "TSS", 0 }, { "LDT", 0 }, { "64-bit code", 0 },
        };
        uint64_t d[ARRAY_SIZE(bad)] = {
            call_gate(FLAT_KERNEL_CS, 0x1000, 3, 0x4),
            call_gate(FLAT_KERNEL_CS, 0, 3, 0x5),
            call_gate(FLAT_KERNEL_CS, 0x1000, 3, 0xe),
            call_gate(FLAT_KERNEL_CS, 0x1000, 3, 0xf),
            ((uint64_t)0x00008900 << 32) | 0x67,
            ((uint64_t)0x00008200 << 32) | 0xfff,
            ((uint64_t)0x00af9b00 << 32) | 0xffff,
        };

        for (i = 0; i < ARRAY_SIZE(bad); i++) {
            rc = hypercall_update_descriptor(ma, d[i]);
            if (rc != -XEN_EINVAL)
                why("%s = %ld, Xen gives -EINVAL", bad[i].what, rc);
        }
        EXPECT("update_descriptor misaligned", hypercall_update_descriptor(ma + 4, 0), -XEN_EINVAL);
        EXPECT("update_descriptor into a page table",
               hypercall_update_descriptor((uint64_t)virt_to_mfn((void *)start_info->pt_base)
                                           << PAGE_SHIFT, 0), -XEN_EINVAL);
        check_done("descriptor-bad-types");
    }

    /* set_gdt of frames that cannot be descriptor tables. */
    {
        unsigned long f[2];

        f[0] = xen_frames[0];
        EXPECT("set_gdt(hypervisor frame)", hypercall_set_gdt(f, 512), -XEN_EINVAL);
        f[0] = virt_to_mfn((void *)start_info->pt_base);
        EXPECT("set_gdt(a page table)", hypercall_set_gdt(f, 512), -XEN_EINVAL);
        f[0] = virt_to_mfn(scratch);
        EXPECT("set_gdt(a writable page)", hypercall_set_gdt(f, 512), -XEN_EINVAL);
        EXPECT("set_gdt(frame list in the hole)",
               hypercall_set_gdt((unsigned long *)BAD_PTR, 512), -XEN_EFAULT);
        EXPECT("set_gdt(too many entries)", hypercall_set_gdt(gdt_frames, HUGE), -XEN_EINVAL);
        EXPECT("set_gdt(0 entries)", hypercall_set_gdt(gdt_frames, 0), 0);
        check_done("set-gdt-bad-frames");
    }
    hypercall_update_va_mapping((unsigned long)gdt, mk_pte(virt_to_mfn(gdt), RW_FLAGS),
                                UVMF_INVLPG);
}

/* ---- bad pointers, huge counts, unaligned addresses ----------------------- */
static void check_pointers(void)
{
    static const unsigned long ptrs[] = { BAD_PTR, UNMAPPED, 0xFFFFF000UL };
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(ptrs); i++) {
        unsigned long p = ptrs[i];
        struct xen_memory_map mm = { .nr_entries = 1, .buffer = p };

        EXPECT("mmu_update(reqs)", hypercall_mmu_update((void *)p, 1, NULL, DOMID_SELF), -XEN_EFAULT);
        EXPECT("mmuext_op(ops)", hypercall_mmuext_op((void *)p, 1, NULL, DOMID_SELF), -XEN_EFAULT);
        EXPECT("set_trap_table", hypercall_set_trap_table((void *)p), -XEN_EFAULT);
        EXPECT("multicall", hypercall_multicall((void *)p, 1), -XEN_EFAULT);
        EXPECT("console_io(write)", hypercall_console_io(CONSOLEIO_write, 16, (void *)p), -XEN_EFAULT);
        EXPECT("memory_op(current_reservation)",
               hypercall_memory_op(XENMEM_current_reservation, (void *)p), -XEN_EFAULT);
        EXPECT("memory_op(memory_map)", hypercall_memory_op(XENMEM_memory_map, (void *)p), -XEN_EFAULT);
        EXPECT("memory_op(memory_map, buffer)", hypercall_memory_op(XENMEM_memory_map, &mm),
               -XEN_EFAULT);
        EXPECT("sched_op(poll)", hypercall_sched_op(SCHEDOP_poll, (void *)p), -XEN_EFAULT);
        EXPECT("sched_op(shutdown)", hypercall_sched_op(SCHEDOP_shutdown, (void *)p), -XEN_EFAULT);
        EXPECT("event_channel_op(send)", hypercall_event_channel_op(EVTCHNOP_send, (void *)p),
               -XEN_EFAULT);
        EXPECT("callback_op(register)", hypercall_callback_op(CALLBACKOP_register, (void *)p),
               -XEN_EFAULT);
        EXPECT("xen_version(extraversion)", hypercall_xen_version(XENVER_extraversion, (void *)p),
               -XEN_EFAULT);
        EXPECT("vcpu_op(set_singleshot_timer)",
               hypercall_vcpu_op(VCPUOP_set_singleshot_timer, 0, (void *)p), -XEN_EFAULT);
        EXPECT("physdev_op(set_iopl)", hypercall_physdev_op(PHYSDEVOP_set_iopl, (void *)p),
               -XEN_EFAULT);
        EXPECT("grant_table_op(setup_table)",
               hypercall_raw(__HYPERVISOR_grant_table_op, 2, p, 1, 0, 0), -XEN_EFAULT);
        if (why_len > 500)
            break;
    }
    /* An output buffer the guest may read but not write. */
    {
        struct xen_memory_map mm = { .nr_entries = 1, .buffer = (uint32_t)start_info->pt_base };

        EXPECT("memory_op(memory_map) into a read-only page",
               hypercall_memory_op(XENMEM_memory_map, &mm), -XEN_EFAULT);
        EXPECT("xen_version(extraversion) into a read-only page",
               hypercall_xen_version(XENVER_extraversion, (void *)start_info->pt_base),
               -XEN_EFAULT);
    }
    check_done("bad-pointers");

    {
        /* The arrays sit at the end of the mapped page before an unmapped
         * one: Xen refuses the whole range up front (guest_handle_okay);
         * an implementation that walks them runs what they say first. */
        uint8_t *page = fence_page;
        struct multicall_entry *mc = (struct multicall_entry *)page;
        struct mmu_update *mu = (struct mmu_update *)page;
        struct mmuext_op *mo = (struct mmuext_op *)page;
        unsigned long ext[1];
        struct xen_memory_reservation r = { .extent_start = (uint32_t)ext,
                                            .nr_extents = HUGE, .domid = DOMID_SELF };
        evtchn_port_t ports[1] = { 0 };
        struct sched_poll p = { .ports = (uint32_t)ports, .nr_ports = HUGE };
        unsigned long mfn = virt_to_mfn(scratch), pfn = virt_to_pfn(scratch);
        unsigned int i;

        for (i = 0; i < PAGE_SIZE / sizeof(*mc); i++)
            mc[i] = (struct multicall_entry){ .op = __HYPERVISOR_xen_version, .result = 0x5a5a5a5a };
        EXPECT("multicall(count 0x7fffffff)", hypercall_multicall(mc, HUGE), -XEN_EFAULT);
        if (mc[0].result != 0x5a5a5a5a)
            why("multicall(count 0x7fffffff) ran its entries (result %#x written)", mc[0].result);
        for (i = 0; i < PAGE_SIZE / sizeof(*mu); i++) {
            mu[i].ptr = ((uint64_t)mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
            mu[i].val = 0x1234;
        }
        EXPECT("mmu_update(count 0x7fffffff)", hypercall_mmu_update(mu, HUGE, NULL, DOMID_SELF),
               -XEN_EFAULT);
        if (mfn_to_pfn(mfn) != pfn) {
            why("mmu_update(count 0x7fffffff) ran its requests (M2P[%#lx] = %#lx)", mfn,
                mfn_to_pfn(mfn));
            mu[0].val = pfn;
            hypercall_mmu_update(mu, 1, NULL, DOMID_SELF);
        }
        for (i = 0; i < PAGE_SIZE / sizeof(*mo); i++)
            mo[i] = (struct mmuext_op){ MMUEXT_TLB_FLUSH_LOCAL, 0, 0 };
        EXPECT("mmuext_op(count 0x7fffffff)", hypercall_mmuext_op(mo, HUGE, NULL, DOMID_SELF),
               -XEN_EFAULT);
        page[PAGE_SIZE - 1] = 'x';
        EXPECT("console_io(write, 0x7fffffff)",
               hypercall_console_io(CONSOLEIO_write, HUGE, (char *)page + PAGE_SIZE - 1), -XEN_EFAULT);
        EXPECT("sched_op(poll, 0x7fffffff ports)", hypercall_sched_op(SCHEDOP_poll, &p), -XEN_EINVAL);
        EXPECT("increase_reservation(0x7fffffff extents)",
               hypercall_memory_op(XENMEM_increase_reservation, &r), 0);
        check_done("huge-counts");
    }

    {
        struct mmu_update *u = (struct mmu_update *)(buf + 1);
        struct mmuext_op *o = (struct mmuext_op *)(buf + 3);
        pte_t cur = mk_pte(virt_to_mfn(scratch), RW_FLAGS);

        u->ptr = l1e_maddr(sva());
        u->val = cur;
        EXPECT("mmu_update with an unaligned request array",
               hypercall_mmu_update(u, 1, NULL, DOMID_SELF), 0);
        o->cmd = MMUEXT_TLB_FLUSH_LOCAL;
        EXPECT("mmuext_op with an unaligned op array", hypercall_mmuext_op(o, 1, NULL, DOMID_SELF), 0);
        EXPECT("update_va_mapping of an unaligned va",
               hypercall_update_va_mapping(sva() + 0x123, cur, UVMF_INVLPG), 0);
        EXPECT("update_descriptor at an unaligned address",
               hypercall_update_descriptor(((uint64_t)virt_to_mfn(buf) << PAGE_SHIFT) + 2, 0),
               -XEN_EINVAL);
        EXPECT("SET_LDT at an unaligned address", mmuext1(MMUEXT_SET_LDT, (unsigned long)buf + 8, 1),
               -XEN_EINVAL);
        check_done("unaligned");
    }
}

/* ---- out-of-range ports ------------------------------------------------------- */
static void check_ports(void)
{
    static const uint32_t bad[] = { 1024, 4096, 0x7fffffff, 0xffffffff };
    struct evtchn_bind_virq bv = { .virq = 24, .vcpu = 0 };
    struct evtchn_status st;
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        struct evtchn_port_op op = { .port = bad[i] };
        evtchn_port_t ports[1] = { bad[i] };
        struct sched_poll p = { .ports = (uint32_t)ports, .nr_ports = 1 };

        EXPECT("EVTCHNOP_send(bad port)", hypercall_event_channel_op(EVTCHNOP_send, &op), -XEN_EINVAL);
        EXPECT("EVTCHNOP_close(bad port)", hypercall_event_channel_op(EVTCHNOP_close, &op), -XEN_EINVAL);
        EXPECT("EVTCHNOP_unmask(bad port)", hypercall_event_channel_op(EVTCHNOP_unmask, &op),
               -XEN_EINVAL);
        memset(&st, 0, sizeof(st));
        st.dom = DOMID_SELF;
        st.port = bad[i];
        EXPECT("EVTCHNOP_status(bad port)", hypercall_event_channel_op(EVTCHNOP_status, &st),
               -XEN_EINVAL);
        EXPECT("SCHEDOP_poll(bad port)", hypercall_sched_op(SCHEDOP_poll, &p), -XEN_EINVAL);
    }
    EXPECT("bind_virq(virq 24)", hypercall_event_channel_op(EVTCHNOP_bind_virq, &bv), -XEN_EINVAL);
    bv.virq = VIRQ_TIMER;
    EXPECT("bind_virq(VIRQ_TIMER again)", hypercall_event_channel_op(EVTCHNOP_bind_virq, &bv),
           -XEN_EEXIST);
    bv.virq = 1;
    bv.vcpu = 5;
    EXPECT("bind_virq(vcpu 5 of 1)", hypercall_event_channel_op(EVTCHNOP_bind_virq, &bv), -XEN_ENOENT);
    {
        struct physdev_set_iobitmap bm = { .bitmap = (uint32_t)buf, .nr_ports = 65537 };

        EXPECT("set_iobitmap(65537 ports)", hypercall_physdev_op(PHYSDEVOP_set_iobitmap, &bm),
               -XEN_EINVAL);
    }
    check_done("ports");
}

/* ---- still intact? ------------------------------------------------------------ */
static bool write_faults(unsigned long addr)
{
    unsigned int faulted = 0, tmp = 0;

    __asm__ __volatile__ ("1: movl (%[p]), %[tmp]\n"
                          "2: movl %[tmp], (%[p])\n"
                          "3:\n"
                          ".pushsection .fixup, \"ax\"\n"
                          "4: movl $1, %[f]\n"
                          "   jmp 3b\n"
                          ".popsection\n"
                          _ASM_EXTABLE(1b, 2b)
                          _ASM_EXTABLE(2b, 4b)
                          : [f] "+r" (faulted), [tmp] "+r" (tmp) : [p] "r" (addr) : "memory");
    return faulted;
}

static bool fault_hook(struct cpu_regs *regs, unsigned long cr2)
{
    (void)cr2;
    return extable_fixup(regs);
}

static void check_intact(void)
{
    unsigned long mfn = virt_to_mfn(start_info);
    struct xen_machphys_mapping mp;

    if (mfn_to_pfn(mfn) != virt_to_pfn(start_info))
        why("the M2P no longer maps start_info's frame back");
    if (!write_faults(MACH2PHYS_VIRT_START))
        why("the M2P became writable");
    if (hypercall_xen_version(XENVER_version, NULL) <= 0)
        why("xen_version no longer answers");
    if (hypercall_memory_op(XENMEM_machphys_mapping, &mp) || mp.v_start != MACH2PHYS_VIRT_START)
        why("machphys_mapping changed");
    check_done("hypervisor-intact");
}

int main(void)
{
    printk("\nisolation: a hostile guest against the hypercall interface\n");
    set_exception_hook(X86_EXC_PF, fault_hook);
    set_exception_hook(X86_EXC_GP, fault_hook);
    hypercall_update_va_mapping((unsigned long)fence[1], 0, UVMF_INVLPG);
    find_xen_frames();
    check_map_low();
    check_map_xen();
    check_pagetables();
    check_pin_foreign();
    check_descriptors();
    check_pointers();
    check_ports();
    check_intact();
    printk("Test result: %s\n", failed ? "FAILURE" : "SUCCESS");
    return 0;
}
