/*
 * hvm-multiboot: an HVM test guest that checks what a Multiboot 0.6.96
 * boot loader (hvmloader) promised it.
 *
 * The machine state at the entry (head.S recorded it): %eax = 0x2BADB002,
 * CR0.PE set and PG clear, EFLAGS.IF and VM clear, every segment register
 * a flat 32-bit segment of the right kind (read from the GDT the loader
 * left), A20 on.  The multiboot_info in %ebx: mem_lower/mem_upper against
 * the memory map, the command line, the map itself (entry sizes, order,
 * where the image, the info and the modules lie), the modules against
 * what the command line expects (mods=N modname=NAME modtext=TEXT), the
 * boot loader's name.  Then the RSDP by the ACPI search, which gives the
 * FADT and its PM1a control block: one result line in XTF's vocabulary on
 * COM1, and S5 (SLP_TYP 0 on QEMU's PIIX4, as the DSDT says).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "hvmio.h"

#define MB_BOOTLOADER_MAGIC     0x2badb002u
#define MBI_MEM                 (1u << 0)
#define MBI_CMDLINE             (1u << 2)
#define MBI_MODS                (1u << 3)
#define MBI_MMAP                (1u << 6)
#define MBI_LOADER_NAME         (1u << 9)
#define LOADER_NAME             "qemu-xenpv hvmloader"

struct entry_state {                    /* head.S fills it in this order */
    uint32_t eax, ebx, eflags, cr0;
    uint16_t sel[6];                    /* CS DS ES FS GS SS */
    uint16_t gdt_limit;
    uint32_t gdt_base;
} __attribute__((packed));

struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr, drives_length, drives_addr, config_table;
    uint32_t boot_loader_name;
};

struct mb_module {
    uint32_t start, end, string, reserved;
};

struct mb_mmap {                        /* mmap_addr points at `size` */
    uint32_t size;
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

extern char _image_start[], _end[];

/* ---- COM1 ---------------------------------------------------------- */
#define tx com1_putc

static void tx_str(const char *s, uint32_t max)
{
    while (max-- && *s)
        tx(*s++);
}

static void tx_hex(uint64_t v, int digits)
{
    int n = 1;
    while (n < 16 && v >> (4 * n))
        n++;
    for (int i = digits > n ? digits : n; i-- > 0; )
        tx("0123456789abcdef"[(v >> (4 * i)) & 15]);
}

static void tx_dec(uint32_t v)
{
    char buf[10];
    int n = 0;
    do
        buf[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        tx(buf[--n]);
}

/* %s, %u, %x (u32, optional zero-padded width), %X (u64) */
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tx_str("hvm-multiboot: ", ~0u);
    for (const char *p = fmt; *p; p++) {
        int width = 0;
        if (*p != '%') {
            tx(*p);
            continue;
        }
        while (p[1] >= '0' && p[1] <= '9')
            width = width * 10 + *++p - '0';
        switch (*++p) {
        case 's': tx_str(va_arg(ap, const char *), ~0u); break;
        case 'u': tx_dec(va_arg(ap, uint32_t)); break;
        case 'x': tx_hex(va_arg(ap, uint32_t), width); break;
        case 'X': tx_hex(va_arg(ap, uint64_t), width); break;
        default: tx('%'); tx(*p);
        }
    }
    va_end(ap);
}

/* ---- the verdict ----------------------------------------------------- */
static unsigned nr_failed;
static const char *first_failure;

static void check(int ok, const char *what)
{
    if (ok)
        return;
    if (!nr_failed++)
        first_failure = what;
    say("check failed: %s\n", what);
}

/* ---- small string helpers -------------------------------------------- */
static uint32_t str_len(const char *s)
{
    uint32_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int same(const char *a, const char *b, uint32_t n)
{
    while (n--)
        if (*a++ != *b++)
            return 0;
    return 1;
}

/* the value of "key=" in the command line (up to a space), or NULL */
static const char *arg(const char *cmdline, const char *key, uint32_t *len)
{
    uint32_t klen = str_len(key);
    for (const char *p = cmdline; p && *p; ) {
        while (*p == ' ')
            p++;
        const char *word = p;
        while (*p && *p != ' ')
            p++;
        if ((uint32_t)(p - word) > klen && same(word, key, klen) && word[klen] == '=') {
            *len = (uint32_t)(p - word) - klen - 1;
            return word + klen + 1;
        }
    }
    return NULL;
}

static uint32_t arg_num(const char *cmdline, const char *key, uint32_t dflt)
{
    uint32_t len, v = 0;
    const char *s = arg(cmdline, key, &len);
    if (!s)
        return dflt;
    while (len-- && *s >= '0' && *s <= '9')
        v = v * 10 + (uint32_t)(*s++ - '0');
    return v;
}

/* ---- the entry state --------------------------------------------------- */
static const char *const sel_names[6] = { "CS", "DS", "ES", "FS", "GS", "SS" };

/* a present 32-bit segment with base 0 and limit 4 GiB - 1; code:
 * execute/read, data: read/write expand-up */
static int flat_segment(const struct entry_state *st, uint16_t sel, int code)
{
    if ((sel & 4) || (sel | 7u) > st->gdt_limit || sel < 8)
        return 0;
    const uint32_t *d = (const uint32_t *)(st->gdt_base + (sel & ~7u));
    uint32_t lo = d[0], hi = d[1];
    uint32_t base = (lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000u);
    uint32_t limit = (lo & 0xffff) | (hi & 0x000f0000u);
    uint32_t type = (hi >> 8) & 15;
    if (hi & (1u << 23))
        limit = (limit << 12) | 0xfff;
    int kind_ok = code ? (type & 8) && (type & 2) : !(type & 8) && (type & 2) && !(type & 4);
    return (hi & (1u << 15)) && (hi & (1u << 12)) && (hi & (1u << 22)) && base == 0 &&
           limit == 0xffffffffu && kind_ok;
}

static void check_entry_state(const struct entry_state *st)
{
    say("EAX %x, EBX %x, CR0 %x, EFLAGS %x\n", st->eax, st->ebx, st->cr0, st->eflags);
    check(st->eax == MB_BOOTLOADER_MAGIC, "EAX is not 0x2BADB002");
    check(st->cr0 & 1, "CR0.PE is clear");
    check(!(st->cr0 & 0x80000000u), "CR0.PG is set");
    check(!(st->eflags & (1u << 9)), "EFLAGS.IF is set");
    check(!(st->eflags & (1u << 17)), "EFLAGS.VM is set");
    int flat = 1;
    for (int i = 0; i < 6; i++) {
        int ok = flat_segment(st, st->sel[i], i == 0);
        if (!ok)
            say("%s = %4x is not a flat 32-bit %s segment\n", sel_names[i], st->sel[i],
                i == 0 ? "read/execute" : "read/write");
        flat &= ok;
    }
    check(flat, "a segment register is not flat 32-bit");
    say("segments CS %4x DS %4x ES %4x FS %4x GS %4x SS %4x: %s\n", st->sel[0], st->sel[1],
        st->sel[2], st->sel[3], st->sel[4], st->sel[5], flat ? "flat 32-bit" : "NOT flat");

    /* A20: with the gate off, a write 1 MiB up would land here too */
    static volatile uint32_t a20_probe;
    volatile uint32_t *low = (volatile uint32_t *)((uint32_t)&a20_probe - 0x100000);
    uint32_t before = *low;
    a20_probe = ~before;
    int a20 = *low == before;
    say("A20 %s\n", a20 ? "on" : "off");
    check(a20, "A20 is off");
}

/* ---- the memory map ------------------------------------------------------ */
static const struct mb_info *mbi;

static int in_ram(uint32_t start, uint32_t end)
{
    if (!(mbi->flags & MBI_MMAP))
        return 0;
    for (uint32_t a = mbi->mmap_addr; a < mbi->mmap_addr + mbi->mmap_length; ) {
        const struct mb_mmap *e = (const void *)a;
        if (e->type == 1 && e->base <= start && end <= e->base + e->length)
            return 1;
        if (e->size < 20)
            break;
        a += e->size + 4;
    }
    return 0;
}

static void check_mmap(void)
{
    uint32_t n = 0, low_kib = 0, high_kib = 0, a = mbi->mmap_addr;
    uint64_t prev_end = 0;
    int sizes_ok = 1, ordered = 1;
    while (a < mbi->mmap_addr + mbi->mmap_length) {
        const struct mb_mmap *e = (const void *)a;
        say("mmap base %X length %X type %u\n", e->base, e->length, e->type);
        sizes_ok &= e->size >= 20;
        ordered &= e->base >= prev_end && e->length;
        prev_end = e->base + e->length;
        if (e->type == 1 && e->base == 0)
            low_kib = (uint32_t)(e->length >> 10);
        if (e->type == 1 && e->base == 0x100000)
            high_kib = (uint32_t)(e->length >> 10);
        if (e->size < 20 || ++n > 128)
            break;
        a += e->size + 4;
    }
    check(sizes_ok, "an mmap entry's size field is below 20");
    check(a == mbi->mmap_addr + mbi->mmap_length, "the mmap entries do not fill mmap_length");
    check(ordered, "the mmap entries are not ordered, or overlap, or are empty");
    say("%u mmap entries; mem_lower %u KiB, mem_upper %u KiB\n", n, mbi->mem_lower, mbi->mem_upper);
    check(mbi->mem_lower == low_kib, "mem_lower is not the RAM at 0 in the map");
    check(mbi->mem_upper == high_kib, "mem_upper is not the RAM at 1 MiB in the map");
    check(mbi->mem_lower <= 640, "mem_lower is above 640 KiB");
    check(in_ram((uint32_t)_image_start, (uint32_t)_end), "this image is not in RAM the map lists");
    check(in_ram((uint32_t)mbi, (uint32_t)mbi + sizeof(*mbi)), "multiboot_info is not in RAM");
}

/* ---- modules ---------------------------------------------------------------- */
static int overlaps(uint32_t a0, uint32_t a1, uint32_t b0, uint32_t b1)
{
    return a0 < b1 && b0 < a1;
}

static void check_modules(const char *cmdline)
{
    uint32_t want = arg_num(cmdline, "mods", 0), name_len = 0, text_len = 0;
    const char *name = arg(cmdline, "modname", &name_len);
    const char *text = arg(cmdline, "modtext", &text_len);
    uint32_t count = mbi->flags & MBI_MODS ? mbi->mods_count : 0;
    say("%u module(s), %u expected\n", count, want);
    check(count == want, "the number of modules is not what mods= says");
    const struct mb_module *m = (const void *)mbi->mods_addr;
    for (uint32_t i = 0; i < count && i < 16; i++, m++) {
        const char *s = m->string ? (const char *)m->string : "";
        uint32_t size = m->end - m->start;
        say("module %u at %x-%x (%u bytes) '%s': '", i, m->start, m->end, size, s);
        tx_str((const char *)m->start, size < 60 ? size : 60);
        tx_str("'\n", ~0u);
        check(m->end >= m->start, "a module ends before it starts");
        check(!(m->start & 0xfff), "a module is not page-aligned (flags bit 0)");
        check(in_ram(m->start, m->end), "a module is not in RAM the map lists");
        check(!overlaps(m->start, m->end, (uint32_t)_image_start, (uint32_t)_end),
              "a module overlaps this image (its bss included)");
        check(!overlaps(m->start, m->end, (uint32_t)mbi, (uint32_t)mbi + sizeof(*mbi)),
              "a module overlaps multiboot_info");
        if (i == 0 && name)
            check(str_len(s) == name_len && same(s, name, name_len),
                  "module 0's string is not modname=");
        if (i == 0 && text)
            check(size == text_len && same((const char *)m->start, text, text_len),
                  "module 0's contents are not modtext=");
    }
}

/* ---- ACPI: the RSDP by the search rules, the FADT's PM1a_CNT ---------- */
static uint8_t sum8(const void *p, uint32_t n)
{
    uint8_t s = 0;
    for (const uint8_t *b = p; n--; )
        s += *b++;
    return s;
}

static uint32_t rsdp_search(uint32_t from, uint32_t to)
{
    for (uint32_t a = from; a < to; a += 16)
        if (same((const char *)a, "RSD PTR ", 8) && sum8((const void *)a, 20) == 0)
            return a;
    return 0;
}

static uint32_t pm1a_cnt_block(void)
{
    uint32_t ebda = (uint32_t)*(volatile uint16_t *)0x40e << 4, rsdp = 0;
    if (ebda >= 0x400 && ebda < 0xa0000)
        rsdp = rsdp_search(ebda, ebda + 1024);
    if (!rsdp)
        rsdp = rsdp_search(0xe0000, 0x100000);
    check(rsdp != 0, "no RSDP found by the ACPI search");
    if (!rsdp)
        return 0;
    check(!in_ram(rsdp, rsdp + 20), "the RSDP lies in RAM the map hands out");
    const uint32_t *rsdt = (const uint32_t *)*(const uint32_t *)(rsdp + 16);
    check(same((const char *)rsdt, "RSDT", 4) && sum8(rsdt, rsdt[1]) == 0, "bad RSDT");
    for (uint32_t i = 0; i < (rsdt[1] - 36) / 4; i++) {
        const uint32_t *t = (const uint32_t *)rsdt[9 + i];
        if (same((const char *)t, "FACP", 4)) {
            say("RSDP at %x (ACPI search), FADT at %x, PM1a_CNT %x\n", rsdp, (uint32_t)t, t[16]);
            return t[16];
        }
    }
    check(0, "no FADT in the RSDT");
    return 0;
}

void mb_main(const struct entry_state *st)
{
    outb(COM1_PORT + 3, 0x03);
    say("Multiboot test guest\n");
    check_entry_state(st);

    mbi = (const struct mb_info *)st->ebx;
    const char *cmdline = "";
    say("multiboot_info flags %x\n", mbi->flags);
    check((mbi->flags & (MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME)) ==
          (MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME),
          "multiboot_info lacks MEM, CMDLINE, MMAP or BOOT_LOADER_NAME");
    if (mbi->flags & MBI_CMDLINE) {
        cmdline = (const char *)mbi->cmdline;
        say("cmdline '%s'\n", cmdline);
        check(in_ram(mbi->cmdline, mbi->cmdline + str_len(cmdline) + 1), "the cmdline is not in RAM");
    }
    if (mbi->flags & MBI_MMAP)
        check_mmap();
    check_modules(cmdline);
    if (mbi->flags & MBI_LOADER_NAME) {
        const char *name = (const char *)mbi->boot_loader_name;
        say("boot loader '%s'\n", name);
        check(str_len(name) == str_len(LOADER_NAME) && same(name, LOADER_NAME, str_len(name)),
              "the boot loader name is not '" LOADER_NAME "'");
    }
    uint32_t pm1a_cnt = pm1a_cnt_block();

    if (nr_failed) {
        tx_str("Test result: FAILURE: ", ~0u);
        tx_str(first_failure, ~0u);
        tx('\n');
    } else {
        tx_str("Test result: SUCCESS\n", ~0u);
    }
    if (pm1a_cnt)
        outw((uint16_t)pm1a_cnt, 1u << 13);             /* SLP_TYP 0 (S5), SLP_EN */
    for (volatile uint32_t i = 0; i < 50000000; i++)    /* QEMU stops us first */
        ;
    say("ACPI power-off did not work\n");
    outb(0x505, 1);                                     /* pvpanic: a crash */
    for (;;)
        __asm__ volatile("cli; hlt");
}
