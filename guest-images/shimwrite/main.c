/*
 * shimwrite: a hostile guest that tries to write into the hypervisor and
 * to map what it must not, and checks that each attempt is refused.
 *
 * Output: one "check <name>: ok|FAIL" line per check, then
 * "Test result: SUCCESS" or "Test result: FAILURE"; then poweroff.
 */
#include "probe.h"

#define PTE_RW_FLAGS    (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)
#define SCRATCH_VA      0x300000UL      /* inside the boot-time 1:1 map */
#define UNMAPPED_VA     0x0DEAD000UL    /* far above a 16 MiB guest */

struct desc_ptr {
    uint16_t limit;
    uint32_t base;
} __attribute__((packed));

static unsigned int failed_checks;

/*
 * sgdt/sidt (gdt = true/false); true if it faulted, as it does from
 * ring 1 when the hypervisor sets CR4.UMIP.
 */
static bool store_table_register(bool gdt, struct desc_ptr *dp)
{
    unsigned int faulted = 0;

    dp->limit = 0;
    dp->base = 0;
    if (gdt)
        __asm__ __volatile__ ("1: sgdt %[dp]\n"
                              "2:\n"
                              ".pushsection .fixup, \"ax\"\n"
                              "3: movl $1, %[f]\n"
                              "   jmp 2b\n"
                              ".popsection\n"
                              _ASM_EXTABLE(1b, 3b)
                              : [dp] "+m" (*dp), [f] "+r" (faulted));
    else
        __asm__ __volatile__ ("1: sidt %[dp]\n"
                              "2:\n"
                              ".pushsection .fixup, \"ax\"\n"
                              "3: movl $1, %[f]\n"
                              "   jmp 2b\n"
                              ".popsection\n"
                              _ASM_EXTABLE(1b, 3b)
                              : [dp] "+m" (*dp), [f] "+r" (faulted));
    return faulted;
}

static void report(const char *name, bool ok)
{
    printk("check %s: %s\n", name, ok ? "ok" : "FAIL");
    if (!ok)
        failed_checks++;
}

/* A write that must fault; prints what happened. */
static bool expect_write_fault(const char *what, unsigned long addr)
{
    bool faulted = write_faults(addr);

    if (faulted)
        printk("  write to %s (%08lx): %s, error code %#x\n", what, addr,
               exception_name(last_fault.vector), last_fault.error_code);
    else
        printk("  write to %s (%08lx): did NOT fault\n", what, addr);
    return faulted;
}

/* 1: the machine-to-physical table is read-only. */
static void check_m2p(void)
{
    bool readable = !read_faults(MACH2PHYS_VIRT_START);

    printk("  M2P at %08lx is %sreadable\n", MACH2PHYS_VIRT_START,
           readable ? "" : "NOT ");
    report("m2p-write", expect_write_fault("M2P", MACH2PHYS_VIRT_START));
}

/* 2: the IDT may be readable, never writable. */
static void check_idt(void)
{
    struct desc_ptr idtr;

    if (store_table_register(false, &idtr)) {
        printk("  sidt faults (UMIP): the IDT address is hidden\n");
        report("idt-write", true);
        return;
    }
    printk("  sidt: base %08x limit %04x, read %s\n", idtr.base, idtr.limit,
           read_faults(idtr.base) ? "faults" : "allowed");
    report("idt-write", expect_write_fault("IDT", idtr.base));
}

/* 3: neither the GDT nor Xen's reserved GDT page is writable. */
static void check_gdt(void)
{
    struct desc_ptr gdtr;
    bool ok;

    if (store_table_register(true, &gdtr)) {
        printk("  sgdt faults (UMIP): the GDT address is hidden\n");
        report("gdt-write", true);
        return;
    }
    printk("  sgdt: base %08x limit %04x\n", gdtr.base, gdtr.limit);
    ok = expect_write_fault("GDT", gdtr.base);
    ok &= expect_write_fault("reserved GDT page",
                             gdtr.base + FIRST_RESERVED_GDT_BYTE);
    report("gdt-write", ok);
}

/* Does the guest still work: a hypercall, a fault round trip, output? */
static bool still_alive(void)
{
    return hypercall_xen_version(XENVER_version, NULL) >= 0 &&
           write_faults(UNMAPPED_VA);
}

/*
 * 4: sweep the hypervisor area above the M2P.  Writes may only succeed
 * on the hypervisor's per-vCPU entry stacks, and then must harm nothing
 * (they store back the value read): we count them and require that the
 * guest keeps running.
 */
static void check_hypervisor_hole(void)
{
    unsigned int tried = 0, not_faulted = 0;
    unsigned long addr;

    for (addr = 0xFF000000UL; addr < 0xFF500000UL; addr += 0x1000) {
        tried++;
        if (!write_faults(addr) && not_faulted++ < 8)
            printk("  write to %08lx did not fault\n", addr);
    }
    for (addr = MACH2PHYS_VIRT_END; addr < 0xFF000000UL; addr += 0x200000) {
        tried++;
        if (!write_faults(addr) && not_faulted++ < 8)
            printk("  write to %08lx did not fault\n", addr);
    }
    printk("  %u of %u writes into the hypervisor area did not fault\n",
           not_faulted, tried);
    report("hypervisor-hole", still_alive());
}

/* Is this frame one of the bootstrap page tables from start_info? */
static bool in_boot_tables(unsigned long mfn)
{
    unsigned long pfn = mfn_to_pfn(mfn);
    unsigned long first = start_info->pt_base >> PAGE_SHIFT;

    return pfn >= first && pfn < first + start_info->nr_pt_frames;
}

static const uint64_t *table_of(uint64_t entry)
{
    return pfn_to_virt(mfn_to_pfn((entry & PTE_MFN_MASK) >> PAGE_SHIFT));
}

/*
 * Walk the boot page tables (L3 at pt_base -> L2 -> L1, each reached
 * through the M2P and mapped 1:1, read-only) to va's L1 entry: its
 * machine address and its value.
 */
static bool find_pte(unsigned long va, uint64_t *pte_maddr, uint64_t *pte)
{
    const uint64_t *l3 = (const uint64_t *)start_info->pt_base;
    uint64_t l3e, l2e;
    const uint64_t *l2, *l1;

    l3e = l3[va >> 30];
    if (!(l3e & _PAGE_PRESENT) ||
        !in_boot_tables((l3e & PTE_MFN_MASK) >> PAGE_SHIFT))
        return false;
    l2 = table_of(l3e);
    l2e = l2[(va >> 21) & 511];
    if (!(l2e & _PAGE_PRESENT) || (l2e & 0x80) /* 2 MiB page */ ||
        !in_boot_tables((l2e & PTE_MFN_MASK) >> PAGE_SHIFT))
        return false;
    l1 = table_of(l2e);
    *pte_maddr = (l2e & PTE_MFN_MASK) + ((va >> PAGE_SHIFT) & 511) * 8;
    *pte = l1[(va >> PAGE_SHIFT) & 511];
    return true;
}

static void restore_scratch(uint64_t orig_pte)
{
    long rc = hypercall_update_va_mapping(SCRATCH_VA, orig_pte, UVMF_INVLPG);

    if (rc)
        printk("  could not restore the mapping of %08lx: %ld\n",
               SCRATCH_VA, rc);
}

/* 5: machine frames of the first MiB are never the guest's to map. */
static void check_uvm_low_mfns(uint64_t orig_pte)
{
    unsigned int mfn, allowed = 0;

    for (mfn = 0; mfn < 0x100; mfn++) {
        uint64_t pte = ((uint64_t)mfn << PAGE_SHIFT) | PTE_RW_FLAGS;
        long rc = hypercall_update_va_mapping(SCRATCH_VA, pte, UVMF_INVLPG);

        if (rc >= 0) {
            if (allowed++ < 8)
                printk("  mapping mfn %#x at %08lx succeeded\n", mfn,
                       SCRATCH_VA);
            restore_scratch(orig_pte);
        }
    }
    printk("  %u of 256 low-MiB mappings were allowed\n", allowed);
    report("uvm-low-mfns", allowed == 0);
}

/* 6: no update_va_mapping inside the hypervisor's area. */
static void check_uvm_hypervisor_va(void)
{
    static const unsigned long vas[] = {
        HYPERVISOR_VIRT_START, MACH2PHYS_VIRT_END, 0xFF000000UL, 0xFFFFF000UL,
    };
    uint64_t pte = ((uint64_t)virt_to_mfn((void *)SCRATCH_VA) << PAGE_SHIFT) |
                   PTE_RW_FLAGS;
    bool ok = true;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(vas); i++) {
        long rc = hypercall_update_va_mapping(vas[i], pte, UVMF_INVLPG);

        printk("  update_va_mapping(%08lx) = %ld\n", vas[i], rc);
        if (rc >= 0) {
            ok = false;
            hypercall_update_va_mapping(vas[i], 0, UVMF_INVLPG);
        }
    }
    report("uvm-hypervisor-va", ok);
}

/* 7: the boot page tables are mapped read-only. */
static void check_pagetables_readonly(void)
{
    unsigned int i, writable = 0;

    for (i = 0; i < start_info->nr_pt_frames; i++) {
        unsigned long va = start_info->pt_base + i * PAGE_SIZE;

        if (!write_faults(va)) {
            printk("  page-table frame at %08lx is writable\n", va);
            writable++;
        }
    }
    printk("  %u page-table frames at %08x, %u writable\n",
           start_info->nr_pt_frames, start_info->pt_base, writable);
    report("pagetables-readonly", writable == 0);
}

/* 8: no PTE may map a page-table frame writable. */
static void check_mmu_update_pt(uint64_t pte_maddr, uint64_t orig_pte)
{
    unsigned int i, allowed = 0;

    for (i = 0; i < start_info->nr_pt_frames; i++) {
        unsigned long pfn = (start_info->pt_base >> PAGE_SHIFT) + i;
        struct mmu_update req = {
            .ptr = pte_maddr | MMU_NORMAL_PT_UPDATE,
            .val = ((uint64_t)pfn_to_mfn(pfn) << PAGE_SHIFT) | PTE_RW_FLAGS,
        };
        long rc = hypercall_mmu_update(&req, 1, NULL, DOMID_SELF);

        if (rc >= 0) {
            printk("  mmu_update mapping page-table pfn %#lx RW succeeded\n",
                   pfn);
            allowed++;
            restore_scratch(orig_pte);
        }
    }
    printk("  %u of %u writable page-table mappings were allowed\n",
           allowed, start_info->nr_pt_frames);
    report("mmu-update-pt-writable", allowed == 0);
}

int main(void)
{
    uint64_t pte_maddr = 0, orig_pte = 0;
    bool have_pte;
    long rc;

    printk("\nshimwrite: can a guest write into the hypervisor?\n");
    probes_init();

    /* Direct page-table writes must fault, not be emulated. */
    rc = hypercall_vm_assist(VMASST_CMD_disable,
                             VMASST_TYPE_writable_pagetables);
    printk("vm_assist(disable, writable_pagetables) = %ld\n", rc);

    have_pte = find_pte(SCRATCH_VA, &pte_maddr, &orig_pte);
    if (have_pte)
        printk("PTE of %08lx at machine address %#llx = %#llx\n",
               SCRATCH_VA, pte_maddr, orig_pte);
    else
        printk("could not find the PTE of %08lx in the boot tables\n",
               SCRATCH_VA);

    check_m2p();
    check_idt();
    check_gdt();
    check_hypervisor_hole();
    if (have_pte) {
        check_uvm_low_mfns(orig_pte);
    } else {
        report("uvm-low-mfns", false);
    }
    check_uvm_hypervisor_va();
    check_pagetables_readonly();
    if (have_pte)
        check_mmu_update_pt(pte_maddr, orig_pte);
    else
        report("mmu-update-pt-writable", false);

    printk("Test result: %s\n", failed_checks ? "FAILURE" : "SUCCESS");
    xen_shutdown(SHUTDOWN_poweroff);
}
