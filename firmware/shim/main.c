/*
 * Shim start of day: our own GDT (Xen's reserved entries), IDT and TSS,
 * the local APIC, time, the doorbell device; then each vCPU asks Python
 * for its first frame and enters the guest.
 */
#include "shim.h"

_Static_assert(sizeof(struct xen_regs) == 68, "cpu_user_regs is 68 bytes");
_Static_assert(__builtin_offsetof(struct shim_boot, status) == SHIM_BOOT_STATUS_OFF,
               "head.S knows where status is");
_Static_assert(sizeof(struct shim_vcpu) <= 4096, "one page per vCPU");
_Static_assert(sizeof(struct shim_pcpu) == 16, "entry.S indexes by 16");
_Static_assert(__builtin_offsetof(struct shim_boot, pstack) == SHIM_BOOT_PSTACK_OFF,
               "head.S knows where pstack is");

struct shim_boot shim_boot __attribute__((section(".data.boot")));

/* Guest-visible, read-only in the guest's view of the hole. */
struct shim_pcpu shim_pcpu[SHIM_MAX_VCPUS] __attribute__((section(".pub.data"), aligned(16)));
struct shim_fast shim_fast __attribute__((section(".pub.data")));
static uint64_t idt[256] __attribute__((section(".pub.data"), aligned(4096)));
struct tss32 {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap;
};
_Static_assert(sizeof(struct tss32) == 104, "32-bit TSS");
static struct tss32 tss[SHIM_MAX_VCPUS] __attribute__((section(".pub.data"), aligned(128)));

static uint64_t make_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (uint64_t)(limit & 0xffff) | ((uint64_t)(base & 0xffffff) << 16) |
           ((uint64_t)access << 40) | ((uint64_t)((limit >> 16) & 0xf) << 48) |
           ((uint64_t)(flags & 0xf) << 52) | ((uint64_t)(base >> 24) << 56);
}

static uint64_t make_gate(uint32_t off, uint16_t sel, unsigned dpl)
{
    return (uint64_t)(off & 0xffff) | ((uint64_t)sel << 16) |
           ((uint64_t)(0x8e | (dpl << 5)) << 40) | ((uint64_t)(off >> 16) << 48);
}

/* Xen's reserved GDT entries (x86_32 gdt_table), accessed bits preset:
 * the guest view of this page is read-only and the CPU must never need to
 * write it. Guest segments end at the top of the read-only M2P. */
static void gdt_init(unsigned cpu)
{
    uint64_t *g = (uint64_t *)(SHIM_GDT_BASE + cpu * SHIM_GDT_STRIDE +
                               SHIM_GDT_RESERVED_PAGE * 4096);
    uint32_t guest_limit = (shim_boot.flags & SHIM_BOOT_PAE) ? 0xf67ff : 0xfc3ff;
    memset(g, 0, 4096);
    g[1] = make_desc(0, 0xfffff, 0x9b, 0xc);          /* 0xe008 ring 0 code */
    g[2] = make_desc(0, 0xfffff, 0x93, 0xc);          /* 0xe010 ring 0 data */
    g[3] = make_desc(0, guest_limit, 0xbb, 0xc);      /* 0xe019 ring 1 code */
    g[4] = make_desc(0, guest_limit, 0xb3, 0xc);      /* 0xe021 ring 1 data */
    g[5] = make_desc(0, guest_limit, 0xfb, 0xc);      /* 0xe02b ring 3 code */
    g[6] = make_desc(0, guest_limit, 0xf3, 0xc);      /* 0xe033 ring 3 data */
    g[8] = make_desc((uint32_t)&tss[cpu], sizeof(tss[0]) - 1, 0x89, 0);

    tss[cpu].ss0 = SHIM_HYP_DS;
    tss[cpu].esp0 = SHIM_ESTACK_BASE + cpu * SHIM_ESTACK_STRIDE + 4096 - 16;
    tss[cpu].iomap = sizeof(tss[0]);                   /* no I/O bitmap */

    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) gdtr = {
        SHIM_GDT_LIMIT, SHIM_GDT_BASE + cpu * SHIM_GDT_STRIDE };
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) idtr = {
        sizeof(idt) - 1, (uint32_t)idt };
    __asm__ __volatile__(
        "lgdt %0\n\t"
        "ljmp %2, $1f\n"
        "1:\tmovl %3, %%eax\n\t"
        "movl %%eax, %%ds\n\tmovl %%eax, %%es\n\tmovl %%eax, %%ss\n\t"
        "xorl %%eax, %%eax\n\tmovl %%eax, %%fs\n\tmovl %%eax, %%gs\n\t"
        "lidt %1\n\t"
        "movl %4, %%eax\n\tltr %%ax\n\t"
        "xorl %%eax, %%eax\n\tlldt %%ax"
        :: "m"(gdtr), "m"(idtr), "i"(SHIM_HYP_CS), "i"(SHIM_HYP_DS), "i"(SHIM_TSS_SEL)
        : "eax", "memory");
}

static void idt_init(void)
{
    for (unsigned v = 0; v < 256; v++) {
        unsigned dpl = (v == 3 || v == 4) ? 3 : (v == SHIM_VEC_HYPERCALL) ? 1 : 0;
        uint32_t target = v == SHIM_VEC_HYPERCALL ? (uint32_t)hypercall_entry
                                                  : (uint32_t)entry_stubs + v * 16;
        idt[v] = make_gate(target, SHIM_HYP_CS, dpl);
    }
}

void shim_vcpu_start(struct shim_vcpu *v);

/* The CPU's SIMD state is the guest's: FXSAVE and SSE exceptions on (#XM),
 * as Xen runs PV guests, when the CPU has them. */
static void cr4_features(void)
{
    uint32_t a, b, c, d, cr4;
    __asm__ __volatile__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    __asm__ __volatile__("movl %%cr4, %0" : "=r"(cr4));
    if (d & (1u << 24))
        cr4 |= 1u << 9;                         /* OSFXSR */
    if (d & (1u << 25))
        cr4 |= 1u << 10;                        /* OSXMMEXCPT */
    __asm__ __volatile__("movl %0, %%cr4" :: "r"(cr4));
}

static void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    __asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                         : "a"(leaf), "c"(subleaf));
}

/* The virtual CPU's own CPUID, for Python's emulation of Xen's policy
 * (forced-emulation CPUID). Basic and extended leaves, subleaf 0 (and the
 * first subleaves of the leaves that have them). */
static void cpuid_snapshot(void)
{
    uint32_t r[4], n = 0, max;
    static const uint32_t bases[2] = { 0, 0x80000000u };
    for (int b = 0; b < 2; b++) {
        cpuid(bases[b], 0, r);
        max = r[0];
        if (max < bases[b] || max > bases[b] + 0x20)
            max = bases[b];
        for (uint32_t l = bases[b]; l <= max; l++) {
            uint32_t subs = (l == 4 || l == 7 || l == 0xb || l == 0xd) ? 4 : 1;
            for (uint32_t s = 0; s < subs && n < SHIM_MAX_CPUID; s++) {
                cpuid(l, s, r);
                shim_boot.cpuid[n].leaf = l;
                shim_boot.cpuid[n].subleaf = s;
                shim_boot.cpuid[n].a = r[0];
                shim_boot.cpuid[n].b = r[1];
                shim_boot.cpuid[n].c = r[2];
                shim_boot.cpuid[n].d = r[3];
                n++;
            }
        }
    }
    shim_boot.nr_cpuid = n;
}

/* A secondary vCPU, on its private stack, paging on (head.S trampoline). */
void ap_main(uint32_t id)
{
    if (id >= shim_boot.nr_vcpus)
        panic("AP with an unknown APIC id", id, shim_boot.nr_vcpus);
    cr4_features();
    gdt_init(id);
    lapic_init();
    shim_vcpu_start((struct shim_vcpu *)shim_boot.vcpu[id]);
}

void shim_main(void)
{
    if (shim_boot.abi_version != SHIM_ABI_VERSION)
        panic("shim ABI version mismatch", shim_boot.abi_version, SHIM_ABI_VERSION);
    if (shim_boot.nr_vcpus == 0 || shim_boot.nr_vcpus > SHIM_MAX_VCPUS)
        panic("bad vCPU count", shim_boot.nr_vcpus, 0);
    for (unsigned i = 0; i < shim_boot.nr_vcpus; i++) {
        shim_pcpu[i].pstack_top = shim_boot.pstack[i];
        shim_pcpu[i].vcpu = shim_boot.vcpu[i];
        shim_pcpu[i].shim_cr3 = shim_boot.cr3;
    }
    shim_fast.doorbell = shim_boot.doorbell;
    shim_fast.doorbell_value = shim_boot.ivshmem_peer << 16;
    shim_fast.doorbell_port = shim_boot.doorbell_port;
    shim_fast.spin_loops = shim_boot.spin_loops ? shim_boot.spin_loops : 1;
    cpuid_snapshot();
    cr4_features();
    idt_init();
    gdt_init(0);
    lapic_init();
    time_init();
    ivshmem_init();
    shim_boot.status = SHIM_STATUS_READY;
    if (shim_boot.flags & SHIM_BOOT_HALT) {
        shim_boot.status = SHIM_STATUS_HALTED;
        for (;;)
            __asm__ __volatile__("cli; hlt");
    }
    /* Continue on vCPU 0's private stack; the boot stack is not needed again.
     * Other vCPUs start when the guest brings them up (VCPUOP_up): the
     * trampoline in head.S brings them here, to ap_main(). */
    struct shim_vcpu *v = (struct shim_vcpu *)shim_boot.vcpu[0];
    __asm__ __volatile__("movl %0, %%esp\n\tpushl %1\n\tcall shim_vcpu_start"
                         :: "r"(shim_boot.pstack[0]), "r"(v) : "memory");
    unreachable();
}
