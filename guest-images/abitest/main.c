/*
 * abitest: the runner, reporting, and the memory helpers the checks share.
 */
#include <stdarg.h>

#include "abitest.h"
#include "xenstore.h"

unsigned int checks_failed, checks_run;
domid_t my_domid;

static char why_buf[512];
static size_t why_len;

void why(const char *fmt, ...)
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

bool why_empty(void)
{
    return why_len == 0;
}

static void report(const char *name, bool ok, const char *reason)
{
    checks_run++;
    if (ok) {
        printk("check %s: ok\n", name);
    } else {
        checks_failed++;
        printk("check %s: FAIL %s\n", name, reason && *reason ? reason : "(no reason)");
    }
}

void check(const char *name, bool ok, const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    buf[0] = '\0';
    if (!ok) {
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
    }
    report(name, ok, buf);
}

void check_why(const char *name)
{
    report(name, why_len == 0, why_buf);
    why_len = 0;
    why_buf[0] = '\0';
}

/* ---- frames ---------------------------------------------------------- */
bool vector_has_errcode(unsigned int v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17;
}

struct frame caught_frame(bool has_ec)
{
    const uint32_t *w = catch_rec.frame;
    struct frame f = { .has_ec = has_ec };

    if (has_ec)
        f.ec = *w++;
    f.eip = w[0];
    f.cs = w[1];
    f.eflags = w[2];
    f.esp = w[3];
    f.ss = w[4];
    return f;
}

/* ---- memory ----------------------------------------------------------- */
#define POOL_PAGES 64
static uint8_t pool[POOL_PAGES][PAGE_SIZE] __aligned(PAGE_SIZE);
static unsigned int pool_used;

void *alloc_page(void)
{
    void *p;

    if (pool_used == POOL_PAGES) {
        printk("abitest: page pool exhausted\n");
        xen_shutdown(SHUTDOWN_crash);
    }
    p = pool[pool_used++];
    memset(p, 0, PAGE_SIZE);
    return p;
}

static void *table_va(pte_t e)
{
    return pfn_to_virt(mfn_to_pfn((unsigned long)((e & PTE_MFN_MASK) >> PAGE_SHIFT)));
}

/* The bootstrap tables (start_info->pt_base, read-only 1:1) map va. */
pte_t *l1e_ptr(unsigned long va)
{
    pte_t *l2, *l1;

#ifdef CONFIG_PAE
    pte_t *l3 = (pte_t *)start_info->pt_base;

    l2 = table_va(l3[va >> 30]);
    l1 = table_va(l2[(va >> 21) & 511]);
    return &l1[(va >> 12) & 511];
#else
    l2 = (pte_t *)start_info->pt_base;
    l1 = table_va(l2[va >> 22]);
    return &l1[(va >> 12) & 1023];
#endif
}

uint64_t l1e_maddr(unsigned long va)
{
    pte_t *p = l1e_ptr(va);

    return vmaddr(p);
}

pte_t mk_pte(unsigned long mfn, unsigned int flags)
{
    return ((pte_t)mfn << PAGE_SHIFT) | flags;
}

long set_pte(unsigned long va, pte_t pte)
{
    return hypercall_update_va_mapping(va, pte, UVMF_INVLPG);
}

long make_ro(void *va)
{
    return set_pte((unsigned long)va, mk_pte(vmfn(va), _PAGE_PRESENT | _PAGE_ACCESSED));
}

long make_rw(void *va)
{
    return set_pte((unsigned long)va, mk_pte(vmfn(va), _PAGE_PRESENT | _PAGE_RW |
                                             _PAGE_ACCESSED | _PAGE_DIRTY));
}

long mmuext(unsigned int cmd, unsigned long arg1, unsigned long arg2)
{
    struct mmuext_op op = { .cmd = cmd, .arg1 = arg1, .arg2 = arg2 };

    return hypercall_mmuext_op(&op, 1, NULL, DOMID_SELF);
}

long mmu_upd(uint64_t ptr, uint64_t val)
{
    struct mmu_update u = { .ptr = ptr, .val = val };

    return hypercall_mmu_update(&u, 1, NULL, DOMID_SELF);
}

unsigned long foreign_mfn(void)
{
    static unsigned long cached = ~0UL;
    unsigned long list[1];
    struct xen_machphys_mfn_list ml = { .max_extents = 1,
                                        .extent_start = (uint32_t)list };

    if (cached == ~0UL) {
        cached = 0;
        if (hypercall_memory_op(XENMEM_machphys_mfn_list, &ml) == 0 &&
            ml.nr_extents == 1 && list[0])
            cached = list[0];
    }
    return cached;
}

/* Make the ring-3 code and stack pages user-accessible. */
static void map_user_pages(void)
{
    unsigned long va;
    long rc = 0;

    for (va = (unsigned long)user_text_start; va < (unsigned long)user_text_end;
         va += PAGE_SIZE)
        rc |= set_pte(va, mk_pte(vmfn((void *)va), _PAGE_PRESENT | _PAGE_USER |
                                 _PAGE_ACCESSED));
    rc |= set_pte((unsigned long)user_stack,
                  mk_pte(vmfn(user_stack), _PAGE_PRESENT | _PAGE_RW | _PAGE_USER |
                         _PAGE_ACCESSED | _PAGE_DIRTY));
    if (rc)
        printk("abitest: could not map the user pages (%ld)\n", rc);
}

static void find_domid(void)
{
    char buf[16];
    unsigned int i, v = 0;

    my_domid = DOMID_SELF;
    if (!xs_ready() || xs_read(XBT_NULL, "domid", buf, sizeof(buf)) < 0)
        return;
    for (i = 0; buf[i] >= '0' && buf[i] <= '9'; i++)
        v = v * 10 + (buf[i] - '0');
    if (i)
        my_domid = v;
}

int main(void)
{
#ifdef CONFIG_PAE
    printk("\nabitest: 32-bit PV ABI checks, PAE (" XEN_GUEST_MAGIC ")\n");
#else
    printk("\nabitest: 32-bit PV ABI checks, non-PAE (" XEN_GUEST_MAGIC ")\n");
#endif
    find_domid();
    printk("abitest: domid %u, %u pages, start_info magic \"%.32s\"\n",
           my_domid, start_info->nr_pages, start_info->magic);
    check("start-info-magic",
          strncmp(start_info->magic, XEN_GUEST_MAGIC, sizeof(XEN_GUEST_MAGIC)) == 0,
          "magic is \"%.32s\", expected \"" XEN_GUEST_MAGIC "\"", start_info->magic);

    abitest_traps_init();
    map_user_pages();

    test_mmu();
    test_memop();
    test_cpu();
    test_user();
    test_events();

    printk("abitest: %u checks, %u failed\n", checks_run, checks_failed);
    printk("Test result: %s\n", checks_failed ? "FAILURE" : "SUCCESS");
    return 0;
}
