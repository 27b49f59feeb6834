/*
 * hvm-smp: an HVM test guest that believes only what firmware tells it.
 *
 * It finds the RSDP by the ACPI search rules (the first KiB of the EBDA,
 * then 0xE0000-0xFFFFF on 16-byte boundaries), validates every checksum
 * (RSDP, extended RSDP, RSDT, XSDT, each table they list, the DSDT),
 * checks the FACS, reads \_S5 out of the DSDT's AML, counts the MADT's
 * enabled local APICs, starts each AP with INIT-SIPI-SIPI (timed with the
 * ACPI PM timer from the FADT), has each print its APIC id, prints one
 * result line in XTF's vocabulary and powers off through PM1a_CNT.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "hvmio.h"

#define TRAMP_BASE      0x8000
#define MAX_CPUS        256
#define LAPIC           0xfee00000u

static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t rd(uint32_t a) { return *(volatile uint32_t *)a; }
static inline void wr(uint32_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

extern char tramp_start[], tramp_end[];
extern volatile uint32_t ap_next;

/* ---- console ------------------------------------------------------- */
static volatile uint32_t print_lock;

static void putc(char c)
{
    com1_putc(c);
}

static void putnum(uint32_t v, unsigned base, int width)
{
    char b[12];
    int n = 0;
    do {
        b[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n < width--)
        putc('0');
    while (n)
        putc(b[--n]);
}

static void vprint(const char *f, va_list ap)
{
    for (; *f; f++) {
        if (*f != '%') {
            putc(*f);
            continue;
        }
        int w = 0;
        while (*++f >= '0' && *f <= '9')
            w = w * 10 + *f - '0';
        switch (*f) {
        case 'u': putnum(va_arg(ap, uint32_t), 10, w); break;
        case 'x': putnum(va_arg(ap, uint32_t), 16, w); break;
        case 's': for (const char *s = va_arg(ap, const char *); *s; s++) putc(*s); break;
        case 'c': putc((char)va_arg(ap, int)); break;
        default: putc('?');
        }
    }
}

static void print(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        __builtin_ia32_pause();
    vprint(f, ap);
    __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
    va_end(ap);
}

/* ---- ACPI ---------------------------------------------------------- */
struct hdr {
    char sig[4];
    uint32_t len;
    uint8_t rev, csum;
    char oem[6], oem_table[8];
    uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

struct rsdp {
    char sig[8];
    uint8_t csum;
    char oem[6];
    uint8_t rev;
    uint32_t rsdt;
    uint32_t len;
    uint64_t xsdt;
    uint8_t xcsum, res[3];
} __attribute__((packed));

static int failures;
static char failure_text[160];

static void failed(const char *what)
{
    if (!failures++) {
        int i = 0;
        for (; what[i] && i < 159; i++)
            failure_text[i] = what[i];
        failure_text[i] = 0;
    }
    print("hvm-smp: check failed: %s\n", what);
}

static uint8_t sum(const void *p, uint32_t n)
{
    const uint8_t *b = p;
    uint8_t s = 0;
    while (n--)
        s += *b++;
    return s;
}

static int eq4(const char *a, const char *b) { return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]; }

static struct rsdp *scan(uint32_t start, uint32_t len)
{
    for (uint32_t a = start; a < start + len; a += 16) {
        struct rsdp *r = (void *)a;
        if (eq4(r->sig, "RSD ") && eq4(r->sig + 4, "PTR ") && sum(r, 20) == 0)
            return r;
    }
    return NULL;
}

/* ACPI 6.5 5.2.5.1: the EBDA's first KiB, then the BIOS ROM area */
static struct rsdp *find_rsdp(const char **where)
{
    uint32_t ebda = (uint32_t)*(volatile uint16_t *)0x40e << 4;
    struct rsdp *r = NULL;
    if (ebda >= 0x400 && ebda < 0xa0000)
        r = scan(ebda, 1024);
    *where = "EBDA";
    if (!r) {
        r = scan(0xe0000, 0x20000);
        *where = "0xE0000-0xFFFFF";
    }
    return r;
}

static int table_ok(struct hdr *h, const char *sig)
{
    if (!eq4(h->sig, sig)) {
        failed("table signature");
        return 0;
    }
    if (h->len < sizeof(*h) || h->len > 0x100000) {
        failed("table length");
        return 0;
    }
    if (sum(h, h->len)) {
        print("hvm-smp: %c%c%c%c at %x: bad checksum\n", h->sig[0], h->sig[1], h->sig[2], h->sig[3], (uint32_t)h);
        failed("table checksum");
        return 0;
    }
    return 1;
}

static struct hdr *fadt, *madt, *dsdt;
static uint32_t pm_tmr, pm1a_cnt;
static uint32_t slp_typ_s5;
static int have_s5;

/* \_S5: NameOp "_S5_" PackageOp PkgLength NumElements {SLP_TYPa, ...} */
static void find_s5(struct hdr *d)
{
    uint8_t *p = (uint8_t *)(d + 1), *end = (uint8_t *)d + d->len;
    for (; p + 8 < end; p++) {
        if (p[0] != '_' || p[1] != 'S' || p[2] != '5' || p[3] != '_')
            continue;
        if (p[-1] != 0x08 && !(p[-1] == '\\' && p[-2] == 0x08))
            continue;
        if (p[4] != 0x12)
            continue;
        uint8_t *q = p + 5;
        q += ((*q >> 6) & 3) + 1;           /* PkgLength */
        q++;                                /* NumElements */
        if (*q == 0x0a)                     /* BytePrefix */
            slp_typ_s5 = q[1];
        else if (*q == 0x00 || *q == 0x01)  /* ZeroOp, OneOp */
            slp_typ_s5 = *q;
        else
            continue;
        have_s5 = 1;
        return;
    }
}

static void check_fadt(struct hdr *f)
{
    uint32_t *w = (uint32_t *)f;
    uint32_t facs = w[9], dsdt_a = w[10];
    if (f->len >= 148 && *(uint64_t *)((uint8_t *)f + 140) &&
        *(uint64_t *)((uint8_t *)f + 140) != dsdt_a)
        failed("FADT DSDT and X_DSDT disagree");
    pm1a_cnt = *(uint32_t *)((uint8_t *)f + 64);
    pm_tmr = *(uint32_t *)((uint8_t *)f + 76);
    struct hdr *fc = (void *)facs;
    if (!facs || !eq4(fc->sig, "FACS") || fc->len < 64 || facs & 63)
        failed("FACS");
    dsdt = (void *)dsdt_a;
    if (!dsdt_a || !table_ok(dsdt, "DSDT")) {
        dsdt = NULL;
        return;
    }
    find_s5(dsdt);
}

/* ---- timing with the ACPI PM timer (3.579545 MHz, 24 bits) --------- */
static void udelay(uint32_t us)
{
    if (!pm_tmr) {
        for (volatile uint32_t i = 0; i < us * 100; i++)
            ;
        return;
    }
    uint32_t ticks = (uint32_t)(((uint64_t)us * 3579545) / 1000000) + 1;
    uint32_t start = inl(pm_tmr) & 0xffffff, elapsed = 0;
    while (elapsed < ticks) {
        __builtin_ia32_pause();
        elapsed = ((inl(pm_tmr) & 0xffffff) - start) & 0xffffff;
    }
}

/* ---- SMP ----------------------------------------------------------- */
static uint8_t lapic_ids[MAX_CPUS], proc_ids[MAX_CPUS];
static uint32_t nr_lapics;
static volatile uint32_t ap_online;
static volatile uint8_t ap_seen[MAX_CPUS];

static uint32_t my_apic_id(void) { return rd(LAPIC + 0x20) >> 24; }

void ap_main(uint32_t index)
{
    uint32_t id = my_apic_id();
    print("hvm-smp: AP %u online: APIC id %u\n", index, id);
    ap_seen[id & 0xff] = 1;
    __atomic_add_fetch(&ap_online, 1, __ATOMIC_SEQ_CST);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void icr(uint32_t dest, uint32_t lo)
{
    wr(LAPIC + 0x310, dest << 24);
    wr(LAPIC + 0x300, lo);
    for (int i = 0; i < 100000 && (rd(LAPIC + 0x300) & (1u << 12)); i++)
        __builtin_ia32_pause();
}

static void parse_madt(struct hdr *m, uint32_t *ioapics, uint32_t *isos, int *irq0_ok)
{
    uint8_t *p = (uint8_t *)m + 44, *end = (uint8_t *)m + m->len;
    while (p + 2 <= end) {
        uint8_t type = p[0], len = p[1];
        if (len < 2 || p + len > end) {
            failed("MADT entry length");
            return;
        }
        if (type == 0 && len == 8) {
            if (*(uint32_t *)(p + 4) & 1) {
                for (uint32_t i = 0; i < nr_lapics; i++)
                    if (lapic_ids[i] == p[3] || proc_ids[i] == p[2])
                        failed("duplicate local APIC or processor id");
                if (nr_lapics < MAX_CPUS) {
                    proc_ids[nr_lapics] = p[2];
                    lapic_ids[nr_lapics++] = p[3];
                }
            }
        } else if (type == 1 && len == 12) {
            print("hvm-smp: MADT: IO-APIC id %u at %x, GSI base %u\n", p[2], *(uint32_t *)(p + 4),
                  *(uint32_t *)(p + 8));
            (*ioapics)++;
        } else if (type == 2 && len == 10) {
            (*isos)++;
            if (p[3] == 0 && *(uint32_t *)(p + 4) == 2)
                *irq0_ok = 1;
        }
        p += len;
    }
    if (p != end)
        failed("MADT length is not a whole number of entries");
}

static void power_off(void)
{
    if (pm1a_cnt && have_s5) {
        outw((uint16_t)pm1a_cnt, (uint16_t)((slp_typ_s5 << 10) | (1u << 13)));
        udelay(100000);
    }
    print("hvm-smp: ACPI power-off did not work\n");
    outb(0x505, 1);                         /* pvpanic */
    for (;;)
        __asm__ volatile("cli; hlt");
}

void bsp_main(uint32_t start_info)
{
    const char *where;
    uint32_t ioapics = 0, isos = 0;
    int irq0_ok = 0;

    outb(COM1_PORT + 3, 0x03);
    print("hvm-smp: HVM SMP test guest\n");
    if (*(uint32_t *)start_info != 0x336ec578)
        failed("hvm_start_info magic");

    struct rsdp *r = find_rsdp(&where);
    if (!r) {
        failed("no RSDP found by the ACPI search");
        goto done;
    }
    print("hvm-smp: RSDP at %x (found in %s), revision %u, OEM '%c%c%c%c%c%c'\n", (uint32_t)r,
          where, r->rev, r->oem[0], r->oem[1], r->oem[2], r->oem[3], r->oem[4], r->oem[5]);
    uint32_t si_rsdp = *(uint32_t *)(start_info + 32);
    if (si_rsdp != (uint32_t)r)
        failed("hvm_start_info.rsdp_paddr is not the RSDP the search found");
    if (r->rev >= 2 && (r->len < 36 || sum(r, r->len)))
        failed("RSDP extended checksum");

    struct hdr *rsdt = (void *)r->rsdt;
    if (!table_ok(rsdt, "RSDT"))
        goto done;
    uint32_t n = (rsdt->len - 36) / 4;
    uint32_t *ent = (uint32_t *)(rsdt + 1);
    if (r->rev >= 2) {
        struct hdr *xsdt = (void *)(uint32_t)r->xsdt;
        if (!r->xsdt || !table_ok(xsdt, "XSDT"))
            goto done;
        uint64_t *x = (uint64_t *)(xsdt + 1);
        if ((xsdt->len - 36) / 8 != n)
            failed("RSDT and XSDT list different numbers of tables");
        for (uint32_t i = 0; i < n; i++)
            if (x[i] != ent[i])
                failed("RSDT and XSDT disagree");
    }
    for (uint32_t i = 0; i < n; i++) {
        struct hdr *h = (void *)ent[i];
        if (sum(h, h->len)) {
            table_ok(h, h->sig);
            continue;
        }
        if (eq4(h->sig, "FACP"))
            fadt = h;
        else if (eq4(h->sig, "APIC"))
            madt = h;
    }
    if (!fadt || !madt) {
        failed("no FADT or no MADT");
        goto done;
    }
    check_fadt(fadt);
    print("hvm-smp: checksums ok: RSDP RSDT%s FACP APIC%s; \\_S5 %s (SLP_TYP %u)\n",
          r->rev >= 2 ? " XSDT" : "", dsdt ? " DSDT" : "", have_s5 ? "found" : "missing", slp_typ_s5);

    parse_madt(madt, &ioapics, &isos, &irq0_ok);
    print("hvm-smp: MADT: length %u, %u local APIC(s), %u IO-APIC(s), %u interrupt source override(s)\n",
          madt->len, nr_lapics, ioapics, isos);
    if (ioapics != 1)
        failed("expected one IO-APIC");
    if (!irq0_ok)
        failed("no IRQ0 -> GSI2 override");
    if (nr_lapics == 0) {
        failed("no local APICs in the MADT");
        goto done;
    }

    uint32_t bsp = my_apic_id();
    int bsp_listed = 0;
    for (uint32_t i = 0; i < nr_lapics; i++)
        bsp_listed |= lapic_ids[i] == bsp;
    if (!bsp_listed)
        failed("the BSP's APIC id is not in the MADT");
    print("hvm-smp: BSP APIC id %u\n", bsp);

    /* INIT-SIPI-SIPI each AP the MADT lists */
    for (uint8_t *s = (uint8_t *)tramp_start, *d = (uint8_t *)TRAMP_BASE; s < (uint8_t *)tramp_end; )
        *d++ = *s++;
    wr(LAPIC + 0xf0, rd(LAPIC + 0xf0) | 0x1ff);     /* software enable, spurious 0xff */
    uint32_t aps = 0;
    for (uint32_t i = 0; i < nr_lapics; i++)
        if (lapic_ids[i] != bsp) {
            icr(lapic_ids[i], 0x00004500);          /* INIT */
            aps++;
        }
    udelay(10000);
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < nr_lapics; i++)
            if (lapic_ids[i] != bsp && !ap_seen[lapic_ids[i]])
                icr(lapic_ids[i], 0x00004600 | (TRAMP_BASE >> 12));   /* SIPI */
        udelay(200);
    }
    for (uint32_t t = 0; t < 5000 && ap_online < aps; t++)
        udelay(1000);

    for (uint32_t i = 0; i < nr_lapics; i++)
        if (lapic_ids[i] != bsp && !ap_seen[lapic_ids[i]]) {
            print("hvm-smp: APIC id %u did not come up\n", lapic_ids[i]);
            failed("an AP listed in the MADT did not start");
        }
    print("hvm-smp: %u CPU(s) in the MADT, %u online\n", nr_lapics, 1 + ap_online);

done:
    if (failures)
        print("Test result: FAILURE: %s\n", failure_text);
    else
        print("Test result: SUCCESS\n");
    power_off();
}
