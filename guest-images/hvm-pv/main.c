/*
 * hvm-pv: PV drivers in an HVM guest, through the hypercall area
 * qemu-xenpv writes.  It finds "XenPVHVM" at 0x9FA00, turns paging on
 * (PSE, with an alias of low memory at 0xC0000000 so every pointer it
 * passes is a guest-virtual address Python must translate), then:
 * xen_version, console_io, HVMOP_get_param, XENMEM_add_to_physmap
 * (shared_info), the GSI callback (COM2's interrupt through the IO-APIC),
 * the PV console ring, XenStore reads, a grant table and a disk through
 * blkfront (blk.c), and SCHEDOP_shutdown.
 */
#include <stdarg.h>
#include <stdint.h>

#include "hvmio.h"
#include "hvmpv.h"

/* what the compiler may call in a freestanding build */
size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return x[i] - y[i];
    return 0;
}

void *memcpy(void *d, const void *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)d)[i] = ((const uint8_t *)s)[i];
    return d;
}

void *memset(void *d, int c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)d)[i] = (uint8_t)c;
    return d;
}

#define LAPIC           0xfee00000u
#define IOAPIC          0xfec00000u
#define CB_VECTOR       0x40                /* the IO-APIC routes GSI 3 here */
#define PV_VECTOR       0xf3                /* the vector callback (Linux's choice) */

#define putc com1_putc

void print(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    for (; *f; f++) {
        if (*f != '%') {
            putc(*f);
            continue;
        }
        f++;
        if (*f == 's') {
            for (const char *s = va_arg(ap, const char *); *s; s++)
                putc(*s);
        } else {
            uint32_t v = va_arg(ap, uint32_t), base = *f == 'x' ? 16 : 10;
            char b[12];
            int n = 0;
            do { b[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
            while (n)
                putc(b[--n]);
        }
    }
    va_end(ap);
}

static int failures;
void check(int ok, const char *what)
{
    if (!ok) {
        failures++;
        print("hvm-pv: check failed: %s\n", what);
    }
}

/* ---- hypercalls through the page ---- */
static uint32_t hypercall_va;

long hcall(unsigned int nr, uint32_t a1, uint32_t a2, uint32_t a3)
{
    long ret;
    uint32_t fn = hypercall_va + nr * 32;
    __asm__ volatile("call *%[fn]" : "=a"(ret), "+b"(a1), "+c"(a2), "+d"(a3)
                     : [fn] "r"(fn) : "memory");
    return ret;
}

struct pv_info {
    char sig[8];
    uint16_t length;
    uint8_t version, checksum;
    uint32_t hypercall, mailbox, doorbell, nr_vcpus, xen_version, features;
} __attribute__((packed));

/* ---- paging: PSE identity of the first 256 MiB + an alias of 0-4 MiB ---- */
static uint32_t pd[1024] __attribute__((aligned(4096)));

static void paging_on(void)
{
    for (uint32_t i = 0; i < 64; i++)
        pd[i] = (i << 22) | 0x83;                   /* P RW PS */
    pd[ALIAS >> 22] = 0x83;                         /* VA 0xC0000000 -> PA 0 */
    pd[IOAPIC >> 22] = (IOAPIC & 0xffc00000u) | 0x93; /* LAPIC, IO-APIC: UC */
    __asm__ volatile("mov %%cr4, %%eax; or $0x10, %%eax; mov %%eax, %%cr4\n\t"
                     "mov %0, %%cr3\n\t"
                     "mov %%cr0, %%eax; or $0x80010000, %%eax; mov %%eax, %%cr0"
                     :: "r"(pd) : "eax", "memory");
}

/* ---- events ---- */
static uint8_t shinfo[4096] __attribute__((aligned(4096)));
volatile uint32_t callbacks;
static volatile uint32_t pending_seen[32];

static void drain_events(void)
{
    volatile uint8_t *vi = shinfo;                  /* vcpu_info[0] */
    volatile uint32_t *pend = (uint32_t *)(shinfo + 2048);
    vi[0] = 0;                                      /* evtchn_upcall_pending */
    uint32_t sel = __atomic_exchange_n((uint32_t *)(shinfo + 4), 0, __ATOMIC_SEQ_CST);
    while (sel) {
        int w = __builtin_ctz(sel);
        sel &= sel - 1;
        uint32_t bits = __atomic_exchange_n(&pend[w], 0, __ATOMIC_SEQ_CST);
        pending_seen[w] |= bits;
    }
    callbacks++;
    *(volatile uint32_t *)(LAPIC + 0xb0) = 0;       /* EOI */
}

/* HVM_PARAM_CALLBACK_IRQ, GSI type: COM2's line through the IO-APIC */
void callback_handler(void)
{
    inb(0x2f8);                                     /* acknowledge COM2's line */
    drain_events();
}

/* ... vector type: the vector itself, no line to acknowledge */
static volatile uint32_t vector_callbacks;
void vector_handler(void)
{
    vector_callbacks++;
    drain_events();
}

extern char callback_entry[], vector_entry[];
static uint64_t idt[256] __attribute__((aligned(8)));

static void set_gate(int vec, void *handler)
{
    uint32_t h = (uint32_t)handler;
    idt[vec] = (h & 0xffff) | (0x10ull << 16) | (0x8eull << 40) | ((uint64_t)(h >> 16) << 48);
}

static void interrupts_on(void)
{
    set_gate(CB_VECTOR, callback_entry);
    set_gate(PV_VECTOR, vector_entry);
    struct { uint16_t lim; uint32_t base; } __attribute__((packed)) d = { sizeof(idt) - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" :: "m"(d));
    outb(0x21, 0xff);                               /* PICs off: the IO-APIC delivers */
    outb(0xa1, 0xff);
    *(volatile uint32_t *)(LAPIC + 0xf0) = 0x1ff;   /* LAPIC on */
    volatile uint32_t *sel = (uint32_t *)IOAPIC, *win = (uint32_t *)(IOAPIC + 0x10);
    *sel = 0x10 + 2 * 3;                            /* GSI 3: edge, high, vector */
    *win = CB_VECTOR;
    *sel = 0x10 + 2 * 3 + 1;
    *win = 0;                                       /* to APIC id 0 */
    outb(0x2f9, 0x01);                              /* COM2: receive interrupt */
    outb(0x2fc, 0x08);                              /* OUT2 */
    while (inb(0x2fd) & 1)
        inb(0x2f8);
    __asm__ volatile("sti");
}

int wait_for(volatile uint32_t *what, uint32_t old)
{
    for (uint32_t i = 0; i < 20000000 && *what == old; i++)
        __asm__ volatile("pause");
    return *what != old;
}

/* ---- the rings ---- */
static void console_write(uint8_t *ring, const char *s)
{
    volatile uint32_t *prod = (uint32_t *)(ring + 3084), *cons = (uint32_t *)(ring + 3080);
    uint32_t p = *prod;
    for (; *s; s++) {
        while (p - *cons >= 2048)
            ;
        ring[1024 + (p++ & 2047)] = (uint8_t)*s;
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *prod = p;
}

static uint32_t store_port, xs_req_id;
static struct xenstore_domain_interface *store;

static void xs_put(uint32_t *p, const void *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        store->req[(*p)++ & (XENSTORE_RING_SIZE - 1)] = ((const char *)data)[i];
}

int xs_request(uint32_t type, const char *path, const char *value, char *out, uint32_t outlen)
{
    volatile struct xenstore_domain_interface *r = store;
    uint32_t plen = strlen(path) + 1, vlen = value ? strlen(value) : 0;
    struct xsd_sockmsg hdr = { type, ++xs_req_id, 0, plen + vlen };
    uint32_t p = r->req_prod;
    if (sizeof(hdr) + hdr.len > XENSTORE_RING_SIZE - (p - r->req_cons))
        return -1;
    xs_put(&p, &hdr, sizeof(hdr));
    xs_put(&p, path, plen);
    xs_put(&p, value, vlen);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    r->req_prod = p;
    struct evtchn_send send = { store_port };
    uint32_t cb = callbacks;
    hcall(HC_event_channel_op, EVTCHNOP_send, V(&send), 0);
    wait_for(&callbacks, cb);                       /* xenstored's answer is signalled */
    for (uint32_t i = 0; i < 50000000 && r->rsp_prod - r->rsp_cons < sizeof(hdr); i++)
        __asm__ volatile("pause");
    uint32_t c = r->rsp_cons;
    struct xsd_sockmsg rh;
    if (r->rsp_prod - c < sizeof(hdr))
        return -1;
    for (uint32_t i = 0; i < sizeof(rh); i++)
        ((char *)&rh)[i] = r->rsp[(c + i) & (XENSTORE_RING_SIZE - 1)];
    for (uint32_t i = 0; i < 50000000 && r->rsp_prod - c < sizeof(rh) + rh.len; i++)
        __asm__ volatile("pause");
    if (r->rsp_prod - c < sizeof(rh) + rh.len || rh.req_id != xs_req_id)
        return -1;
    int ok = rh.type == type && rh.len < outlen;
    for (uint32_t i = 0; ok && i < rh.len; i++)
        out[i] = r->rsp[(c + sizeof(rh) + i) & (XENSTORE_RING_SIZE - 1)];
    if (ok)
        out[rh.len] = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    r->rsp_cons = c + sizeof(rh) + rh.len;
    return ok ? (int)rh.len : -1;
}

static uint64_t get_param(uint32_t index)
{
    struct xen_hvm_param p = { DOMID_SELF, 0, index, 0 };
    long rc = hcall(HC_hvm_op, 1 /* HVMOP_get_param */, V(&p), 0);
    check(rc == 0, "HVMOP_get_param");
    return p.value;
}

void guest_main(void)
{
    outb(COM1_PORT + 3, 0x03);
    print("hvm-pv: PV drivers in an HVM guest\n");
    struct pv_info *pi = (struct pv_info *)0x9fa00;
    uint8_t sum = 0;
    for (uint32_t i = 0; i < sizeof(*pi); i++)
        sum += ((uint8_t *)pi)[i];
    if (__builtin_memcmp(pi->sig, "XenPVHVM", 8) || sum) {
        print("hvm-pv: no XenPVHVM table at 0x9fa00\nTest result: FAILURE\n");
        return;
    }
    print("hvm-pv: XenPVHVM v%u: hypercall page at %x, doorbell port %x\n", pi->version,
          pi->hypercall, pi->doorbell);
    hypercall_va = pi->hypercall;                   /* identity-mapped */
    paging_on();
    print("hvm-pv: paging on (PSE), pointers passed through the alias at %x\n", ALIAS);

    long v = hcall(HC_xen_version, 0, 0, 0);        /* XENVER_version */
    static char extra[16];
    check(hcall(HC_xen_version, 1, V(extra), 0) == 0, "XENVER_extraversion");
    print("hvm-pv: Xen %u.%u%s\n", (uint32_t)v >> 16, (uint32_t)v & 0xffff, extra);
    check((uint32_t)v == pi->xen_version, "xen_version matches the table");

    static const char hello[] = "hvm-pv: hello through console_io\n";
    check(hcall(HC_console_io, 0, sizeof(hello) - 1, V(hello)) == 0, "console_io");

    uint32_t store_pfn = (uint32_t)get_param(1), cons_pfn = (uint32_t)get_param(17);
    uint32_t cons_port = (uint32_t)get_param(18);
    store_port = (uint32_t)get_param(2);
    store = (struct xenstore_domain_interface *)(store_pfn << 12);
    print("hvm-pv: store pfn %x port %u, console pfn %x port %u\n", store_pfn, store_port,
          cons_pfn, cons_port);
    check(store_pfn && cons_pfn && store_port && cons_port, "HVM params");

    struct xen_add_to_physmap xatp =
        { DOMID_SELF, 0, XENMAPSPACE_shared_info, 0, (uint32_t)shinfo >> 12 };
    check(hcall(HC_memory_op, XENMEM_add_to_physmap, V(&xatp), 0) == 0,
          "XENMEM_add_to_physmap(shared_info)");
    uint32_t wc_sec = *(volatile uint32_t *)(shinfo + 2308);
    print("hvm-pv: shared_info at %x, wallclock %u s\n", (uint32_t)shinfo, wc_sec);
    check(wc_sec > 1600000000u, "shared_info wallclock");

    /* a pointer Python must refuse: our hypercall area's own code */
    check(hcall(HC_console_io, 0, 16, pi->hypercall) == -14,
          "console_io from the hypercall area: -EFAULT");
    check(hcall(HC_hvm_op, 1, 0x7ffff000u, 0) == -14, "an unmapped pointer: -EFAULT");

    struct xen_hvm_param cb = { DOMID_SELF, 0, 0, 3 };      /* CALLBACK_IRQ: GSI 3 */
    interrupts_on();
    shinfo[1] = 0;                                  /* vcpu_info[0].evtchn_upcall_mask */
    check(hcall(HC_hvm_op, 0, V(&cb), 0) == 0, "HVMOP_set_param(CALLBACK_IRQ, GSI 3)");

    console_write((uint8_t *)(cons_pfn << 12), "hvm-pv: hello through the PV console ring\n");
    uint32_t before = callbacks;
    struct evtchn_send send = { cons_port };
    check(hcall(HC_event_channel_op, EVTCHNOP_send, V(&send), 0) == 0, "EVTCHNOP_send (console)");
    check(wait_for(&callbacks, before), "a callback after the console kick");

    static char val[64];
    check(xs_request(XS_READ, "domid", 0, val, sizeof(val)) > 0, "XenStore read domid");
    print("hvm-pv: xenstore domid = %s\n", val);
    check(xs_request(XS_READ, "name", 0, val, sizeof(val)) > 0, "XenStore read name");
    print("hvm-pv: xenstore name = %s\n", val);
    print("hvm-pv: %u callback interrupt(s)\n", callbacks);
    check(callbacks >= 2, "callbacks for the rings");

    /* from now on the vector type: an MSI-X message with our vector */
    struct xen_hvm_param vcb = { DOMID_SELF, 0, 0, 2ull << 56 | 0x10 };
    check(hcall(HC_hvm_op, 0, V(&vcb), 0) == -22, "CALLBACK_IRQ vector 0x10: -EINVAL");
    vcb.value = 2ull << 56 | PV_VECTOR;
    check(hcall(HC_hvm_op, 0, V(&vcb), 0) == 0, "HVMOP_set_param(CALLBACK_IRQ, vector)");
    check(xs_request(XS_READ, "domid", 0, val, sizeof(val)) > 0, "XenStore read (vector)");
    print("hvm-pv: vector callback %x: %u interrupt(s)\n", PV_VECTOR, vector_callbacks);
    check(vector_callbacks >= 1, "a vector callback for the XenStore answer");

    grant_table_setup();
    blk_test();
    net_test();

    print(failures ? "Test result: FAILURE\n" : "Test result: SUCCESS\n");
    uint32_t reason[1] = { 0 };                     /* SHUTDOWN_poweroff */
    hcall(HC_sched_op, 2, V(reason), 0);
    print("hvm-pv: SCHEDOP_shutdown returned\n");
    for (;;)
        __asm__ volatile("hlt");
}
