/*
 * CPU checks: the trap table (per-vector DPL), exception bounce frames and
 * error codes, the iret hypercall, set_gdt / update_descriptor / SET_LDT
 * with Xen's descriptor checks, the failsafe callback, fpu_taskswitch and
 * lazy FPU, debug registers, vm_assist, physdev_op and port I/O.
 * Expected values are Xen's (pv/traps.c, pv/descriptor-tables.c,
 * pv/emul-priv-op.c, pv/misc-hypercalls.c, physdev.c).
 */
#include "abitest.h"

#define RW_FLAGS    (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)

extern const uint32_t abt_stubs[NR_EXCEPTIONS];
extern char abt_stub_0x40[], abt_stub_0x41[], abt_stub_0x42[], abt_ret2kern[];

void *test_gdt;

void abitest_traps_init(void)
{
    static struct trap_info t[NR_EXCEPTIONS + 5];
    unsigned int v, n = 0;
    long rc;

    for (v = 0; v < NR_EXCEPTIONS; v++) {
        unsigned int dpl = (v == X86_EXC_BP || v == X86_EXC_OF) ? 3 : 0;

        t[n++] = (struct trap_info){ v, TI_DPL(dpl), FLAT_KERNEL_CS, abt_stubs[v] };
    }
    t[n++] = (struct trap_info){ 0x20, TI_DPL(3), FLAT_KERNEL_CS, (uint32_t)abt_ret2kern };
    t[n++] = (struct trap_info){ 0x40, TI_DPL(1), FLAT_KERNEL_CS, (uint32_t)abt_stub_0x40 };
    t[n++] = (struct trap_info){ 0x41, TI_DPL(3), FLAT_KERNEL_CS, (uint32_t)abt_stub_0x41 };
    t[n++] = (struct trap_info){ 0x42, TI_DPL(0), FLAT_KERNEL_CS, (uint32_t)abt_stub_0x42 };
    t[n] = (struct trap_info){ 0, 0, 0, 0 };
    rc = hypercall_set_trap_table(t);
    if (rc)
        printk("abitest: set_trap_table = %ld\n", rc);
    /* Ring 3 enters the kernel on its own stack. */
    rc = hypercall_stack_switch(FLAT_KERNEL_SS, (unsigned long)kstack_top - 64);
    if (rc)
        printk("abitest: stack_switch = %ld\n", rc);
}

/* Expect `vector` from fn, at EIP fault_ip, with error code ec (or none). */
static void expect_fault(void (*fn)(void *), void *arg, unsigned int vector, long ec,
                         const char *what)
{
    long v = catch_call(fn, arg);
    struct frame f;

    if (v != (long)vector) {
        why("%s: %s, expected %s", what, v == -1 ? "no exception" : exception_name(v),
            exception_name(vector));
        return;
    }
    f = caught_frame(vector_has_errcode(vector));
    if (f.eip != fault_ip)
        why("%s: EIP %#x, expected %#x", what, f.eip, fault_ip);
    if ((f.cs & 0xffff) != FLAT_KERNEL_CS)
        why("%s: CS %#x in the frame", what, f.cs & 0xffff);
    if (ec >= 0 && f.ec != (uint32_t)ec)
        why("%s: error code %#x, expected %#lx", what, f.ec, ec);
}

/* ---- exceptions -------------------------------------------------------- */
static void t_de(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "xorl %%ecx, %%ecx\n\t"
                          "movl $1, %%eax\n\t"
                          "xorl %%edx, %%edx\n"
                          "1: divl %%ecx" ::: "eax", "ecx", "edx", "memory");
}

static void t_bp(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\tint3\n1:" ::: "memory");
}

static void t_of(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "movl $0x7fffffff, %%eax\n\t"
                          "addl $1, %%eax\n\t"      /* OF = 1 */
                          "into\n1:" ::: "eax", "memory", "cc");
}

static void t_br(void *a)
{
    static struct { int32_t lo, hi; } bounds = { 0, 10 };

    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "movl $11, %%eax\n"
                          "1: bound %%eax, %0" :: "m" (bounds) : "eax", "memory");
}

static void t_ud(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: ud2" ::: "memory");
}

static void t_nm(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: fld1\n\tfstp %%st(0)" ::: "memory");
}

static void t_np(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "movl %0, %%eax\n"
                          "1: movl %%eax, %%fs" :: "i" (GDT_SEL_NP) : "eax", "memory");
}

static void t_ss(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "movl %0, %%eax\n"
                          "1: movl %%eax, %%ss" :: "i" (GDT_SEL_NP) : "eax", "memory");
}

static void t_gp_sel(void *a)
{
    (void)a;
    /* Index 100 of our 1-page GDT: a null descriptor. */
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "movl $0x321, %%eax\n"
                          "1: movl %%eax, %%fs" ::: "eax", "memory");
}

static void t_gp_lgdt(void *a)
{
    static struct { uint16_t limit; uint32_t base; } __attribute__((packed)) d;

    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: lgdt %0" :: "m" (d) : "memory");
}

static void t_pf_read(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: movl 0x0DEAD000, %%eax" ::: "eax", "memory");
}

static void t_pf_write(void *a)
{
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: movl $1, (%0)" :: "r" (a) : "memory");
}

static void t_int(void *a)
{
    unsigned int v = (unsigned int)a;

    switch (v) {
    case 0x40:
        __asm__ __volatile__ ("movl $1f, fault_ip\n\tint $0x40\n1:" ::: "memory");
        break;
    case 0x41:
        __asm__ __volatile__ ("movl $1f, fault_ip\n\tint $0x41\n1:" ::: "memory");
        break;
    case 0x42:
        __asm__ __volatile__ ("movl $1f, fault_ip\n1: int $0x42" ::: "memory");
        break;
    case 0x43:
        __asm__ __volatile__ ("movl $1f, fault_ip\n1: int $0x43" ::: "memory");
        break;
    case 1:
        __asm__ __volatile__ ("movl $1f, fault_ip\n1: int $1" ::: "memory");
        break;
    }
}

static void t_mf(void *a)
{
    static uint16_t cw = 0x037b;    /* all masked but ZE (divide by zero) */

    (void)a;
    __asm__ __volatile__ ("fninit\n\t"
                          "fldcw %0\n\t"
                          "fld1\n\t"
                          "fldz\n\t"
                          "fdivrp\n\t"          /* 1/0: pending #MF */
                          "movl $1f, fault_ip\n"
                          "1: fwait\n\t"
                          "fninit" :: "m" (cw) : "memory");
}

static void t_xm(void *a)
{
    static uint32_t mxcsr = 0x1f80 & ~0x200;   /* unmask ZE */
    static float zero = 0.0f, one = 1.0f;

    (void)a;
    __asm__ __volatile__ (".byte 0x0f, 0xae, 0x15\n\t.long %c0\n\t"    /* ldmxcsr mxcsr */
                          ".byte 0xf3, 0x0f, 0x10, 0x05\n\t.long %c1\n\t" /* movss one, %xmm0 */
                          "movl $1f, fault_ip\n"
                          "1: .byte 0xf3, 0x0f, 0x5e, 0x05\n\t.long %c2" /* divss zero, %xmm0 */
                          :: "i" (&mxcsr), "i" (&one), "i" (&zero) : "memory");
}

static volatile uint32_t db_var;

static void t_db_write(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "movl $5, db_var\n1:" ::: "memory");
}

static void t_db_step(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t"
                          "pushfl\n\t"
                          "orl $0x100, (%%esp)\n\t"
                          "popfl\n\t"
                          "nop\n1:\n\t"
                          "pushfl\n\t"
                          "andl $~0x100, (%%esp)\n\t"
                          "popfl" ::: "memory", "cc");
}

static void t_icebp(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n\t.byte 0xf1\n1:" ::: "memory");
}

static void check_exceptions(void)
{
    void *ro = alloc_page();

    expect_fault(t_de, NULL, X86_EXC_DE, -1, "div by 0");
    check_why("exc-de");
    expect_fault(t_bp, NULL, X86_EXC_BP, -1, "int3");
    check_why("exc-bp");
    expect_fault(t_of, NULL, X86_EXC_OF, -1, "into");
    check_why("exc-of");
    expect_fault(t_br, NULL, X86_EXC_BR, -1, "bound");
    check_why("exc-br");
    expect_fault(t_ud, NULL, X86_EXC_UD, -1, "ud2");
    check_why("exc-ud");
    expect_fault(t_gp_lgdt, NULL, X86_EXC_GP, 0, "lgdt in ring 1");
    expect_fault(t_gp_sel, NULL, X86_EXC_GP, 0x320, "loading selector 0x321 (null descriptor)");
    check_why("exc-gp");
    expect_fault(t_pf_read, NULL, X86_EXC_PF, 0, "read of an unmapped page");
    if (catch_rec.vector == X86_EXC_PF && catch_rec.cr2 != 0x0DEAD000)
        why("#PF cr2 %#x, expected 0x0DEAD000", catch_rec.cr2);
    make_ro(ro);
    expect_fault(t_pf_write, ro, X86_EXC_PF, 3, "write to a read-only page");
    if (catch_rec.vector == X86_EXC_PF && catch_rec.cr2 != (uint32_t)ro)
        why("#PF cr2 %#x, expected %p", catch_rec.cr2, ro);
    make_rw(ro);
    check_why("exc-pf");

    if (test_gdt) {
        expect_fault(t_np, NULL, X86_EXC_NP, GDT_SEL_NP & ~3, "mov to %fs of a not-present segment");
        check_why("exc-np");
        expect_fault(t_ss, NULL, X86_EXC_SS, GDT_SEL_NP & ~3, "mov to %ss of a not-present segment");
        check_why("exc-ss");
    } else {
        check("exc-np", false, "no GDT of our own (set_gdt failed)");
        check("exc-ss", false, "no GDT of our own (set_gdt failed)");
    }

    expect_fault(t_mf, NULL, X86_EXC_MF, -1, "fwait after an unmasked x87 divide by zero");
    __asm__ __volatile__ ("fninit");
    check_why("exc-mf");
    expect_fault(t_xm, NULL, X86_EXC_XM, -1, "divss by zero with ZE unmasked");
    {
        static uint32_t mxcsr;
        static const uint32_t mxcsr_default = 0x1f80;

        __asm__ __volatile__ (".byte 0x0f, 0xae, 0x1d\n\t.long %c0"    /* stmxcsr mxcsr */
                              :: "i" (&mxcsr) : "memory");
        if (catch_rec.vector != X86_EXC_XM && (mxcsr & 0x4))
            why("the CPU completed the divss and set MXCSR.ZE (MXCSR %#x) instead of "
                "raising #XM: QEMU's TCG does not implement SIMD floating-point exceptions",
                mxcsr);
        __asm__ __volatile__ (".byte 0x0f, 0xae, 0x15\n\t.long %c0"    /* ldmxcsr */
                              :: "i" (&mxcsr_default) : "memory");
    }
    check_why("exc-xm");

    /* Frame format: the saved upcall mask in CS[23:16], EFLAGS.IF = !mask. */
    {
        struct frame f;
        long v;

        local_irq_disable();
        v = catch_call(t_ud, NULL);
        local_irq_enable();
        f = caught_frame(false);
        if (v != X86_EXC_UD || ((f.cs >> 16) & 0xff) != 1 || (f.eflags & EFLAGS_IF))
            why("events masked: vector %ld, CS %#x EFLAGS %#x (want mask 1 in CS[23:16], "
                "IF clear)", v, f.cs, f.eflags);
        v = catch_call(t_ud, NULL);
        f = caught_frame(false);
        if (v != X86_EXC_UD || ((f.cs >> 16) & 0xff) != 0 || !(f.eflags & EFLAGS_IF))
            why("events on: vector %ld, CS %#x EFLAGS %#x (want mask 0, IF set)", v, f.cs,
                f.eflags);
        if (catch_rec.frame_addr & 3)
            why("frame at %#x is not aligned", catch_rec.frame_addr);
        check_why("exc-frame-upcall-mask");
    }
}

/* ---- the trap table: DPL per vector from ring 1 ---------------------------- */
static void check_trap_table_ring1(void)
{
    long v;
    struct frame f;

    v = catch_call(t_int, (void *)0x40);
    f = caught_frame(false);
    if (v != 0x40 || f.eip != fault_ip)
        why("int $0x40 (DPL 1) from ring 1: vector %#lx EIP %#x, expected 0x40 at %#x", v,
            f.eip, fault_ip);
    v = catch_call(t_int, (void *)0x41);
    f = caught_frame(false);
    if (v != 0x41 || f.eip != fault_ip)
        why("int $0x41 (DPL 3) from ring 1: vector %#lx EIP %#x", v, f.eip);
    expect_fault(t_int, (void *)0x42, X86_EXC_GP, (0x42 << 3) | 2, "int $0x42 (DPL 0) from ring 1");
    expect_fault(t_int, (void *)0x43, X86_EXC_GP, (0x43 << 3) | 2, "int $0x43 (no entry)");
    expect_fault(t_int, (void *)1, X86_EXC_GP, (1 << 3) | 2, "int $1 (#DB entry has DPL 0)");
    check_why("trap-table-dpl-ring1");

    /* TI_MASK_EVENTS: the handler runs with events masked. */
    {
        struct trap_info t[2] = {
            { 0x41, TI_DPL(3) | TI_MASK_EVENTS, FLAT_KERNEL_CS, (uint32_t)abt_stub_0x41 },
            { 0, 0, 0, 0 },
        };
        long rc = hypercall_set_trap_table(t);

        v = catch_call(t_int, (void *)0x41);
        if (rc || v != 0x41 || catch_rec.mask != 1)
            why("set_trap_table %ld; int $0x41 with TI_MASK_EVENTS: vector %#lx, mask %u "
                "in the handler", rc, v, catch_rec.mask);
        local_irq_enable();
        t[0].flags = TI_DPL(3);
        hypercall_set_trap_table(t);
        v = catch_call(t_int, (void *)0x41);
        if (v != 0x41 || catch_rec.mask != 0)
            why("int $0x41 without TI_MASK_EVENTS: mask %u in the handler", catch_rec.mask);
        check_why("trap-table-mask-events");
    }
}

/* ---- the iret hypercall (ring 1) ----------------------------------------- */
static void check_iret(void)
{
    uint32_t eax;

    eax = iret_to_self(0x12345678, 0x2);        /* IF clear: events masked */
    if (eax != 0x12345678)
        why("iret restored EAX %#x", eax);
    if (!irqs_disabled())
        why("iret with EFLAGS.IF clear left events unmasked");
    eax = iret_to_self(0x9abcdef0, 0x202);
    if (eax != 0x9abcdef0)
        why("iret restored EAX %#x", eax);
    if (irqs_disabled())
        why("iret with EFLAGS.IF set left events masked");
    local_irq_enable();
    check_why("iret-ring1");
}

/* ---- descriptor tables --------------------------------------------------- */
static uint64_t desc(uint32_t base, uint32_t limit, uint32_t access, uint32_t flags)
{
    uint32_t lo = (limit & 0xffff) | (base << 16);
    uint32_t hi = ((base >> 16) & 0xff) | (access << 8) | (limit & 0xf0000) |
                  (flags << 20) | (base & 0xff000000);

    return ((uint64_t)hi << 32) | lo;
}

#define ACC_DATA_DPL1   0xb3    /* P, DPL 1, S, data RW accessed */
#define ACC_DATA_DPL3   0xf3
#define ACC_CODE_DPL0   0x9b    /* P, DPL 0, S, code RX accessed */
#define FLAGS_4K_32     0xc     /* G, D/B */

static uint64_t call_gate(uint16_t sel, uint32_t off, unsigned int dpl)
{
    uint32_t lo = (off & 0xffff) | ((uint32_t)sel << 16);
    uint32_t hi = (off & 0xffff0000) | 0x8000 | (dpl << 13) | 0x0c00;

    return ((uint64_t)hi << 32) | lo;
}

static volatile uint32_t fs_probe = 0xabcd1234;

static uint32_t read_via_fs(uint16_t sel)
{
    uint32_t v;

    __asm__ __volatile__ ("movl %1, %%fs\n\t"
                          "movl %%fs:(%2), %0\n\t"
                          "movl %3, %%fs"
                          : "=&r" (v) : "r" ((uint32_t)sel), "r" (&fs_probe), "r" (0)
                          : "memory");
    return v;
}

static void check_gdt(void)
{
    uint64_t *gdt = alloc_page(), *bad = alloc_page();
    unsigned long frames[1] = { vmfn(gdt) };
    unsigned long badframes[1] = { vmfn(bad) };
    long rc;

    gdt[1] = desc(0, 0xfffff, ACC_DATA_DPL1, FLAGS_4K_32);
    gdt[2] = desc(0, 0xfffff, ACC_DATA_DPL1 & ~0x80, FLAGS_4K_32);   /* not present */
    gdt[3] = desc(0, 0xfffff, ACC_DATA_DPL1, FLAGS_4K_32);

    rc = hypercall_set_gdt(frames, 512);
    if (rc != -XEN_EINVAL)
        why("set_gdt of a frame mapped writable = %ld, Xen gives -EINVAL", rc);
    make_ro(gdt);
    rc = hypercall_set_gdt(frames, FIRST_RESERVED_GDT_ENTRY + 1);
    if (rc != -XEN_EINVAL)
        why("set_gdt with %u entries = %ld, Xen gives -EINVAL", FIRST_RESERVED_GDT_ENTRY + 1, rc);
    rc = hypercall_set_gdt(frames, 512);
    if (rc) {
        why("set_gdt = %ld", rc);
    } else {
        test_gdt = gdt;
        if (read_via_fs(GDT_SEL_DATA1) != 0xabcd1234)
            why("reading through our GDT selector %#x failed", GDT_SEL_DATA1);
        rc = make_rw(gdt);
        if (rc != -XEN_EBUSY)
            why("mapping a live GDT frame writable = %ld, Xen gives -EBUSY", rc);
    }
    /* A frame with a TSS descriptor cannot be a GDT frame. */
    bad[5] = desc(0, 0x67, 0x89, 0);
    make_ro(bad);
    rc = hypercall_set_gdt(badframes, 512);
    if (rc != -XEN_EINVAL)
        why("set_gdt of a frame holding a TSS descriptor = %ld, Xen gives -EINVAL", rc);
    if (rc == 0)
        hypercall_set_gdt(frames, 512);
    make_rw(bad);
    check_why("set-gdt");
}

static void check_update_descriptor(void)
{
    uint64_t *gdt = test_gdt;
    uint64_t *data = alloc_page();
    uint64_t ma, d;
    long rc;
    struct {
        const char *what;
        uint64_t in;
        long rc;
        uint64_t out;           /* expected content (accessed bit ignored) */
    } cases[] = {
        { "ring-0 code (DPL fixed up to 1)", desc(0, 0xfffff, ACC_CODE_DPL0, FLAGS_4K_32), 0,
          desc(0, 0xfffff, ACC_CODE_DPL0 | 0x20, FLAGS_4K_32) },
        { "ring-0 data (DPL fixed up to 1)", desc(0, 0xfffff, 0x93, FLAGS_4K_32), 0,
          desc(0, 0xfffff, 0xb3, FLAGS_4K_32) },
        { "ring-3 data", desc(0x1000, 0xff, ACC_DATA_DPL3, 0x4), 0,
          desc(0x1000, 0xff, ACC_DATA_DPL3, 0x4) },
        { "call gate DPL 3 to the ring-1 code (DPL moved to the RPL)",
          call_gate(FLAT_KERNEL_CS, 0x123456, 3), 0,
          ((uint64_t)0x00128c00 << 32) | (((uint32_t)(FLAT_KERNEL_CS | 3)) << 16) | 0x3456 },
        { "call gate to Xen's ring-0 code 0xe008", call_gate(0xe008, 0x1000, 3), -XEN_EINVAL, 0 },
        { "interrupt gate", call_gate(FLAT_KERNEL_CS, 0x1000, 3) | ((uint64_t)0x200 << 32),
          -XEN_EINVAL, 0 },
        { "TSS", desc(0, 0x67, 0x89, 0), -XEN_EINVAL, 0 },
        { "LDT descriptor", desc(0, 0xfff, 0x82, 0), -XEN_EINVAL, 0 },
        { "64-bit code segment", desc(0, 0xfffff, ACC_CODE_DPL0 | 0x20, 0xa), -XEN_EINVAL, 0 },
        { "not-present TSS", desc(0, 0x67, 0x09, 0), 0, desc(0, 0x67, 0x09, 0) },
    };
    unsigned int i;

    if (!gdt) {
        check("update-descriptor", false, "no GDT of our own (set_gdt failed)");
        return;
    }
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        ma = vmaddr(&gdt[8]);
        rc = hypercall_update_descriptor(ma, cases[i].in);
        d = gdt[8];
        if (rc != cases[i].rc)
            why("%s: update_descriptor = %ld, Xen gives %ld", cases[i].what, rc, cases[i].rc);
        else if (rc == 0 && (d & ~((uint64_t)0x100 << 32)) != (cases[i].out & ~((uint64_t)0x100 << 32)))
            why("%s: stored %#llx, Xen stores %#llx", cases[i].what, (unsigned long long)d,
                (unsigned long long)cases[i].out);
        hypercall_update_descriptor(ma, 0);
    }
    /* Where it may write: 8-byte aligned, our frames, not page tables. */
    rc = hypercall_update_descriptor(vmaddr(&gdt[8]) + 4, 0);
    if (rc != -XEN_EINVAL)
        why("misaligned address: %ld, Xen gives -EINVAL", rc);
    rc = hypercall_update_descriptor((uint64_t)foreign_mfn() << PAGE_SHIFT, 0);
    if (rc != -XEN_EINVAL)
        why("a frame not owned: %ld, Xen gives -EINVAL", rc);
    rc = hypercall_update_descriptor(vmaddr((void *)start_info->pt_base), 0);
    if (rc != -XEN_EINVAL)
        why("a page-table frame: %ld, Xen gives -EINVAL", rc);
    rc = hypercall_update_descriptor(vmaddr(&data[3]), desc(0, 0xfffff, ACC_DATA_DPL1, FLAGS_4K_32));
    if (rc != 0 || (data[3] & ~((uint64_t)0x100 << 32)) !=
                   (desc(0, 0xfffff, ACC_DATA_DPL1, FLAGS_4K_32) & ~((uint64_t)0x100 << 32)))
        why("a plain data frame: %ld (%#llx); Xen writes it and gives 0", rc,
            (unsigned long long)data[3]);
    check_why("update-descriptor");
}

static void check_ldt(void)
{
    uint64_t *ldt = alloc_page(), *rwldt = alloc_page();
    long rc;
    uint32_t v;

    ldt[0] = desc(0, 0xfffff, ACC_DATA_DPL3, FLAGS_4K_32);
    ldt[1] = desc(0, 0xfffff, ACC_DATA_DPL1, FLAGS_4K_32);
    make_ro(ldt);
    rc = mmuext(MMUEXT_SET_LDT, (unsigned long)ldt, 2);
    if (rc)
        why("SET_LDT(%p, 2) = %ld", ldt, rc);
    else {
        v = read_via_fs((1 << 3) | 4 | 1);
        if (v != 0xabcd1234)
            why("reading through LDT selector 0xd gave %#x", v);
        rc = make_rw(ldt);
        if (rc != -XEN_EBUSY)
            why("mapping a live LDT page writable = %ld, Xen gives -EBUSY", rc);
    }
    rc = mmuext(MMUEXT_SET_LDT, (unsigned long)ldt + 8, 2);
    if (rc != -XEN_EINVAL)
        why("SET_LDT(unaligned) = %ld, Xen gives -EINVAL", rc);
    rc = mmuext(MMUEXT_SET_LDT, (unsigned long)ldt, 8193);
    if (rc != -XEN_EINVAL)
        why("SET_LDT(8193 entries) = %ld, Xen gives -EINVAL", rc);
    rc = mmuext(MMUEXT_SET_LDT, HYPERVISOR_VIRT_START, 1);
    if (rc != -XEN_EINVAL)
        why("SET_LDT(in the hole) = %ld, Xen gives -EINVAL", rc);
    rc = mmuext(MMUEXT_SET_LDT, 0, 0);
    if (rc)
        why("SET_LDT(0, 0) = %ld", rc);
    if (make_rw(ldt))
        why("the old LDT page could not be mapped writable after SET_LDT(0, 0)");
    (void)rwldt;
    check_why("mmuext-set-ldt");
}

/* ---- the failsafe callback ------------------------------------------------ */
static void check_failsafe(void)
{
    uint64_t *gdt = test_gdt;
    struct callback_register cb = {
        .type = CALLBACKTYPE_failsafe, .flags = CALLBACKF_mask_events,
        .cs = FLAT_KERNEL_CS, .eip = (uint32_t)abt_failsafe,
    };
    extern char failsafe_callback[];
    uint64_t good;
    long rc;
    uint32_t fs;

    if (!gdt) {
        check("failsafe-callback", false, "no GDT of our own (set_gdt failed)");
        return;
    }
    good = gdt[3];
    rc = hypercall_callback_op(CALLBACKOP_register, &cb);
    if (rc)
        why("callback_op(register failsafe) = %ld", rc);
    failsafe_count = 0;
    /* %fs holds a selector whose descriptor then disappears. */
    __asm__ __volatile__ ("movl %0, %%fs" :: "r" ((uint32_t)GDT_SEL_SPARE));
    rc = hypercall_update_descriptor(vmaddr(&gdt[3]), good & ~((uint64_t)0x8000 << 32));
    if (rc)
        why("update_descriptor(not present) = %ld", rc);
    iret_to_self(0, 0x202);                     /* any return reloads %fs */
    hypercall_sched_op(SCHEDOP_yield, NULL);
    __asm__ __volatile__ ("movl %%fs, %0" : "=r" (fs));
    if (failsafe_count != 1)
        why("failsafe callback ran %u times, expected once", failsafe_count);
    else {
        if ((failsafe_frame[2] & 0xffff) != GDT_SEL_SPARE)
            why("failsafe frame FS %#x, expected %#x (frame DS ES FS GS EIP CS EFLAGS: "
                "%#x %#x %#x %#x %#x %#x %#x)", failsafe_frame[2] & 0xffff, GDT_SEL_SPARE,
                failsafe_frame[0], failsafe_frame[1], failsafe_frame[2], failsafe_frame[3],
                failsafe_frame[4], failsafe_frame[5], failsafe_frame[6]);
        if ((failsafe_frame[5] & 0xffff) != FLAT_KERNEL_CS)
            why("failsafe frame CS %#x", failsafe_frame[5]);
        if (failsafe_mask != 1)
            why("CALLBACKF_mask_events: mask %u in the failsafe callback", failsafe_mask);
    }
    if (fs & 0xfffc)
        why("%%fs is still %#x after the failsafe callback", fs);
    hypercall_update_descriptor(vmaddr(&gdt[3]), good);
    cb.eip = (uint32_t)failsafe_callback;
    hypercall_callback_op(CALLBACKOP_register, &cb);
    local_irq_enable();
    check_why("failsafe-callback");
}

/* ---- FPU ------------------------------------------------------------------ */
static uint32_t read_cr0(void)
{
    uint32_t v;

    __asm__ __volatile__ ("movl %%cr0, %0" : "=r" (v));
    return v;
}

static void check_fpu(void)
{
    long v, rc;
    uint32_t cr0;

    rc = hypercall_fpu_taskswitch(1);
    if (rc)
        why("fpu_taskswitch(1) = %ld", rc);
    cr0 = read_cr0();
    if (!(cr0 & 8))
        why("CR0.TS clear after fpu_taskswitch(1) (CR0 %#x)", cr0);
    v = catch_call(t_nm, NULL);
    if (v != X86_EXC_NM)
        why("fld1 with TS set: %s, expected #NM", v == -1 ? "no exception" : exception_name(v));
    else if (caught_frame(false).eip != fault_ip)
        why("#NM at %#x, expected %#x", caught_frame(false).eip, fault_ip);
    /* Xen clears the virtual TS as it delivers #NM. */
    v = catch_call(t_nm, NULL);
    if (v != -1)
        why("fld1 after the #NM was delivered: %s (Xen cleared TS)", exception_name(v));
    hypercall_fpu_taskswitch(1);
    __asm__ __volatile__ ("clts");
    if (read_cr0() & 8)
        why("CR0.TS still set after clts");
    v = catch_call(t_nm, NULL);
    if (v != -1)
        why("fld1 after clts: %s", exception_name(v));
    hypercall_fpu_taskswitch(1);
    hypercall_fpu_taskswitch(0);
    v = catch_call(t_nm, NULL);
    if (v != -1)
        why("fld1 after fpu_taskswitch(0): %s", exception_name(v));
    /* mov to %cr0 may change TS only */
    cr0 = read_cr0();
    __asm__ __volatile__ ("movl %0, %%cr0" :: "r" (cr0 | 8));
    if (!(read_cr0() & 8))
        why("mov to %%cr0 did not set TS");
    __asm__ __volatile__ ("movl %0, %%cr0" :: "r" (cr0 & ~8));
    if (read_cr0() & 8)
        why("mov to %%cr0 did not clear TS");
    check_why("fpu-taskswitch");
}

/* ---- MSRs: rdmsr is answered by the shim's fast path ----------------------- */
#define MSR_IA32_PAT    0x277
#define MSR_EFER        0xc0000080u
#define MSR_UNREADABLE  0x2000          /* nothing a PV domU may read */
#define PAT_POWER_ON    0x0007040600070406ull
#define XEN_MSR_PAT     0x0000050100070406ull   /* WB WT UC- UC WC WP UC UC */

struct msr_op {
    uint32_t idx;
    uint64_t val;
};

static void t_rdmsr(void *a)
{
    struct msr_op *m = a;
    uint32_t lo = 0xdeadbeef, hi = 0xdeadbeef;

    __asm__ __volatile__ ("movl $1f, fault_ip\n1: rdmsr"
                          : "+a" (lo), "+d" (hi) : "c" (m->idx) : "memory");
    m->val = ((uint64_t)hi << 32) | lo;
}

static void t_wrmsr(void *a)
{
    struct msr_op *m = a;

    __asm__ __volatile__ ("movl $1f, fault_ip\n1: wrmsr"
                          :: "c" (m->idx), "a" ((uint32_t)m->val),
                             "d" ((uint32_t)(m->val >> 32)) : "memory");
}

/* rdmsr idx: true and *val, or false (and why()) if it faulted. */
static bool read_msr(uint32_t idx, uint64_t *val, const char *what)
{
    struct msr_op m = { idx, 0 };
    long v = catch_call(t_rdmsr, &m);

    if (v != -1) {
        why("rdmsr %s (%#x): %s", what, idx, exception_name(v));
        return false;
    }
    *val = m.val;
    return true;
}

static bool write_msr(uint32_t idx, uint64_t val, const char *what)
{
    struct msr_op m = { idx, val };
    long v = catch_call(t_wrmsr, &m);

    if (v != -1) {
        why("wrmsr %s (%#x) = %#llx: %s", what, idx, (unsigned long long)val,
            exception_name(v));
        return false;
    }
    return true;
}

static void check_msrs(void)
{
    uint64_t pat, got;
    struct msr_op m = { MSR_UNREADABLE, 0 };
    uint32_t eax;

    /* PAT is Xen's fixed layout, an ABI with PV guests: writes are #GP
     * (pv/emul-priv-op.c read_msr/write_msr). */
    if (read_msr(MSR_IA32_PAT, &pat, "PAT") && pat != XEN_MSR_PAT)
        why("rdmsr PAT = %#llx, Xen's PV PAT is %#llx", (unsigned long long)pat, XEN_MSR_PAT);
    m.idx = MSR_IA32_PAT;
    m.val = PAT_POWER_ON;
    expect_fault(t_wrmsr, &m, X86_EXC_GP, 0, "wrmsr PAT (fixed for PV guests)");
    /* the same after an iret hypercall (the other fast path) */
    eax = iret_to_self(0x5a5a5a5a, 0x202);
    if (eax != 0x5a5a5a5a)
        why("iret restored EAX %#x", eax);
    if (read_msr(MSR_IA32_PAT, &got, "PAT") && got != XEN_MSR_PAT)
        why("rdmsr PAT after an iret gave %#llx", (unsigned long long)got);
    /* EFER: readable, no long mode for a 32-bit guest; only the same value
     * may be written back (Linux does). */
    if (read_msr(MSR_EFER, &got, "EFER") && got != 0)
        why("rdmsr EFER = %#llx, expected 0", (unsigned long long)got);
    write_msr(MSR_EFER, got, "EFER (unchanged)");
    m.idx = MSR_EFER;
    m.val = got | 0x800;
    expect_fault(t_wrmsr, &m, X86_EXC_GP, 0, "wrmsr EFER with NX set (a change)");
    /* APIC_BASE: "Linux PV guests will attempt to read APIC_BASE" */
    if (read_msr(0x1b, &got, "APIC_BASE") && got != 0xfee00900ull)
        why("rdmsr APIC_BASE = %#llx on vCPU 0, Xen gives 0xfee00900", (unsigned long long)got);
    m.idx = MSR_UNREADABLE;
    m.val = 0;
    /* Anything else: #GP(0) through the trap table, at the rdmsr. */
    expect_fault(t_rdmsr, &m, X86_EXC_GP, 0, "rdmsr 0x2000 (not readable by a PV domU)");
    check_why("msr-rdmsr-wrmsr");
}

/* ---- debug registers ------------------------------------------------------- */
#define DR7_L0_W4   (0x1 | (0x1 << 16) | (0x3 << 18))  /* L0, RW0 = write, LEN0 = 4 */

static void check_debugregs(void)
{
    long rc, v;
    uint32_t dr6;

    rc = hypercall_set_debugreg(0, (unsigned long)&db_var);
    if (rc)
        why("set_debugreg(0) = %ld", rc);
    rc = hypercall_get_debugreg(0);
    if (rc != (long)&db_var)
        why("get_debugreg(0) = %#lx, expected %p", rc, &db_var);
    rc = hypercall_set_debugreg(6, 0);
    rc |= hypercall_set_debugreg(7, DR7_L0_W4);
    if (rc)
        why("set_debugreg(6/7) = %ld", rc);
    v = catch_call(t_db_write, NULL);
    hypercall_set_debugreg(7, 0);
    if (v != X86_EXC_DB)
        why("a write to a DR0/DR7 watched word: %s, expected #DB",
            v == -1 ? "no exception" : exception_name(v));
    else if (caught_frame(false).eip != fault_ip)
        why("#DB EIP %#x, expected %#x (after the write)", caught_frame(false).eip, fault_ip);
    dr6 = hypercall_get_debugreg(6);
    if (!(dr6 & 1))
        why("DR6 %#x after the breakpoint: B0 clear", dr6);
    check_why("debugreg-hypercalls");

    /* The same through mov to/from %drN (emulated for ring 1). */
    hypercall_set_debugreg(6, 0);
    __asm__ __volatile__ ("movl %0, %%db0" :: "r" (&db_var));
    __asm__ __volatile__ ("movl %0, %%db7" :: "r" (DR7_L0_W4));
    __asm__ __volatile__ ("movl %%db7, %0" : "=r" (dr6));
    if ((dr6 & 0xffff0003) != DR7_L0_W4)
        why("mov from %%dr7 gave %#x", dr6);
    v = catch_call(t_db_write, NULL);
    __asm__ __volatile__ ("movl %0, %%db7" :: "r" (0));
    if (v != X86_EXC_DB)
        why("breakpoint set with mov to %%dr7: %s, expected #DB",
            v == -1 ? "no exception" : exception_name(v));
    __asm__ __volatile__ ("movl %%db6, %0" : "=r" (dr6));
    if (!(dr6 & 1))
        why("mov from %%dr6 = %#x: B0 clear", dr6);
    check_why("debugreg-mov");

    /* Single step: #DB after the instruction, DR6.BS. */
    hypercall_set_debugreg(6, 0);
    v = catch_call(t_db_step, NULL);
    if (v != X86_EXC_DB)
        why("single step: %s, expected #DB", v == -1 ? "no exception" : exception_name(v));
    else if (caught_frame(false).eip != fault_ip)
        why("single-step #DB EIP %#x, expected %#x", caught_frame(false).eip, fault_ip);
    dr6 = hypercall_get_debugreg(6);
    if (!(dr6 & 0x4000))
        why("DR6 %#x after a single step: BS clear", dr6);
    /* (icebp, 0xf1, is #UD under QEMU's TCG: not checked.) */
    (void)t_icebp;
    check_why("debugreg-single-step");

    /* What Xen refuses (set_debugreg). */
    rc = hypercall_set_debugreg(0, HYPERVISOR_VIRT_START);
    if (rc != -XEN_EPERM)
        why("set_debugreg(0, hole) = %ld, Xen gives -EPERM", rc);
    rc = hypercall_set_debugreg(7, 0x2000 | 1);
    if (rc != -XEN_EPERM)
        why("set_debugreg(7, GD) = %ld, Xen gives -EPERM", rc);
    rc = hypercall_set_debugreg(7, 1 | (2 << 16));
    if (rc != -XEN_EPERM)
        why("set_debugreg(7, I/O breakpoint without CR4.DE) = %ld, Xen gives -EPERM", rc);
    rc = hypercall_set_debugreg(8, 0);
    if (rc != -XEN_ENODEV)
        why("set_debugreg(8) = %ld, Xen gives -ENODEV", rc);
    rc = hypercall_get_debugreg(8);
    if (rc != -XEN_ENODEV)
        why("get_debugreg(8) = %ld, Xen gives -ENODEV", rc);
    hypercall_set_debugreg(7, 0);
    hypercall_set_debugreg(0, 0);
    check_why("debugreg-refused");
}

/* ---- vm_assist ------------------------------------------------------------- */
static void check_vm_assist(void)
{
    static const unsigned int valid[] = {
        VMASST_TYPE_4gb_segments, VMASST_TYPE_4gb_segments_notify,
        VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3,
        VMASST_TYPE_architectural_iopl, VMASST_TYPE_runstate_update_flag,
    };
    unsigned int i;
    long rc;

    for (i = 0; i < ARRAY_SIZE(valid); i++) {
        rc = hypercall_vm_assist(VMASST_CMD_enable, valid[i]);
        if (rc)
            why("vm_assist(enable, %u) = %ld", valid[i], rc);
        rc = hypercall_vm_assist(VMASST_CMD_disable, valid[i]);
        if (rc)
            why("vm_assist(disable, %u) = %ld", valid[i], rc);
    }
#ifdef CONFIG_PAE
    hypercall_vm_assist(VMASST_CMD_enable, VMASST_TYPE_pae_extended_cr3);
#endif
    rc = hypercall_vm_assist(VMASST_CMD_enable, 6);
    if (rc != -XEN_EINVAL)
        why("vm_assist(enable, 6) = %ld, Xen gives -EINVAL", rc);
    rc = hypercall_vm_assist(VMASST_CMD_enable, VMASST_TYPE_m2p_strict);
    if (rc != -XEN_EINVAL)
        why("vm_assist(enable, m2p_strict) for a 32-bit guest = %ld, Xen gives -EINVAL", rc);
    rc = hypercall_vm_assist(2, VMASST_TYPE_writable_pagetables);
    if (rc != -XEN_ENOSYS)
        why("vm_assist(cmd 2) = %ld, Xen gives -ENOSYS", rc);
    check_why("vm-assist");
}

/* ---- physdev_op and port I/O ---------------------------------------------- */
static volatile uint8_t io_byte;

static void t_inb(void *a)
{
    uint32_t port = (uint32_t)a;
    uint8_t v;

    __asm__ __volatile__ ("movl $1f, fault_ip\n1: inb %%dx, %0" : "=a" (v) : "d" (port) : "memory");
    io_byte = v;
}

static void t_cli(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: cli" ::: "memory");
}

static void t_insb(void *a)
{
    (void)a;
    __asm__ __volatile__ ("movl $1f, fault_ip\n1: rep insb"
                          :: "D" (a), "c" (4), "d" (0x80) : "memory");
}

static long set_iopl(unsigned int iopl)
{
    struct physdev_set_iopl s = { .iopl = iopl };

    return hypercall_physdev_op(PHYSDEVOP_set_iopl, &s);
}

static void check_io(void)
{
    long v, rc;
    static uint8_t bitmap[0x20];
    static uint8_t buf[8];
    struct physdev_set_iobitmap bm = { .bitmap = (uint32_t)bitmap, .nr_ports = 0x100 };

    set_iopl(0);
    expect_fault(t_inb, (void *)0x80, X86_EXC_GP, 0, "inb from ring 1 with IOPL 0");
    expect_fault(t_cli, NULL, X86_EXC_GP, 0, "cli from ring 1 with IOPL 0");
    rc = set_iopl(4);
    if (rc != -XEN_EINVAL)
        why("set_iopl(4) = %ld, Xen gives -EINVAL", rc);
    rc = set_iopl(1);
    if (rc)
        why("set_iopl(1) = %ld", rc);
    io_byte = 0;
    v = catch_call(t_inb, (void *)0x80);
    if (v != -1 || io_byte != 0xff)
        why("inb with IOPL 1: %s, read %#x (a domU reads all ones)",
            v == -1 ? "no exception" : exception_name(v), io_byte);
    v = catch_call(t_insb, buf);
    if (v != -1 || buf[0] != 0xff || buf[3] != 0xff)
        why("rep insb with IOPL 1: %s, read %#x..%#x", v == -1 ? "no exception" :
            exception_name(v), buf[0], buf[3]);
    /* Xen completes cli/sti as no-ops (emul-priv-op.c validate(): X86EMUL_DONE,
     * the upcall-mask update is commented out): events stay as they were. */
    v = catch_call(t_cli, NULL);
    if (v != -1 || irqs_disabled())
        why("cli with IOPL 1: %s, events %s (Xen leaves them on)",
            v == -1 ? "no exception" : exception_name(v), irqs_disabled() ? "masked" : "on");
    local_irq_disable();
    __asm__ __volatile__ ("sti");
    if (!irqs_disabled())
        why("sti with IOPL 1 unmasked events (Xen leaves the mask alone)");
    local_irq_enable();
    set_iopl(0);
    check_why("physdev-set-iopl");

    /* architectural_iopl: the kernel is CPL 0 against the virtual IOPL. */
    hypercall_vm_assist(VMASST_CMD_enable, VMASST_TYPE_architectural_iopl);
    v = catch_call(t_inb, (void *)0x80);
    if (v != -1)
        why("inb from ring 1 with architectural_iopl and IOPL 0: %s", exception_name(v));
    hypercall_vm_assist(VMASST_CMD_disable, VMASST_TYPE_architectural_iopl);
    check_why("vm-assist-architectural-iopl");

    /* set_iobitmap: a clear bit allows the port (reads all ones, writes vanish). */
    memset(bitmap, 0xff, sizeof(bitmap));
    bitmap[0x80 / 8] &= ~(1 << (0x80 % 8));
    rc = hypercall_physdev_op(PHYSDEVOP_set_iobitmap, &bm);
    if (rc)
        why("set_iobitmap = %ld, Xen gives 0 to any PV domain", rc);
    else {
        v = catch_call(t_inb, (void *)0x80);
        if (v != -1)
            why("inb from a port the bitmap allows: %s", exception_name(v));
        expect_fault(t_inb, (void *)0x81, X86_EXC_GP, 0, "inb from a port the bitmap denies");
        expect_fault(t_inb, (void *)0x200, X86_EXC_GP, 0, "inb beyond nr_ports");
    }
    bm.nr_ports = 65537;
    rc = hypercall_physdev_op(PHYSDEVOP_set_iobitmap, &bm);
    if (rc != -XEN_EINVAL)
        why("set_iobitmap(65537 ports) = %ld, Xen gives -EINVAL", rc);
    bm.nr_ports = 0;
    hypercall_physdev_op(PHYSDEVOP_set_iobitmap, &bm);
    expect_fault(t_inb, (void *)0x80, X86_EXC_GP, 0, "inb after the bitmap is removed");
    check_why("physdev-set-iobitmap");
}

void test_cpu(void)
{
    printk("-- CPU\n");
    check_gdt();
    check_exceptions();
    check_trap_table_ring1();
    check_iret();
    check_update_descriptor();
    check_ldt();
    check_failsafe();
    check_fpu();
    check_msrs();
    check_debugregs();
    check_vm_assist();
    check_io();
}
