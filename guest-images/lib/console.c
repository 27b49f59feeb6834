/*
 * Console output and input.
 *
 * Before console_init() everything goes out through console_io
 * (CONSOLEIO_write); early_printk() keeps using it.  After, output goes
 * only to the PV console ring (io/console.h): we fill out[], publish
 * out_prod after a write barrier and kick the backend on the console
 * event channel.  The backend consumes and advances out_cons; input is
 * the mirror image in in[] / in_cons / in_prod.
 */
#include <stdarg.h>

#include "clock.h"
#include "console.h"
#include "events.h"
#include "hypercall.h"
#include "mm.h"
#include "printf.h"
#include "sched.h"

#define OUT_SIZE    sizeof(((struct xencons_interface *)0)->out)
#define IN_SIZE     sizeof(((struct xencons_interface *)0)->in)

/* How long console_flush() waits for a backend that is not reading. */
#define FLUSH_TIMEOUT_NS    (2 * NSEC_PER_SEC)

static struct xencons_interface *ring;  /* NULL: use console_io */
static evtchn_port_t ring_evtchn;

static void hypervisor_console_write(const char *buf, size_t len)
{
    hypercall_console_io(CONSOLEIO_write, len, buf);
}

void console_init(const start_info_t *si)
{
    unsigned long pfn;

    if (si->flags & SIF_INITDOMAIN)
        return;     /* dom0 talks to Xen's console directly */

    /* The ring page is in the bootstrap area, mapped 1:1 from VA 0. */
    pfn = mfn_to_pfn(si->console.domU.mfn);
    if (pfn >= si->nr_pages) {
        early_printk("console: ring mfn %#x has no pfn (got %#lx)\n",
                     si->console.domU.mfn, pfn);
        return;
    }
    ring = pfn_to_virt(pfn);
    ring_evtchn = si->console.domU.evtchn;
    evtchn_unmask(ring_evtchn);
}

static void ring_notify(void)
{
    evtchn_send(ring_evtchn);
}

/*
 * Block until at most `limit` bytes of output are unconsumed, or until
 * system time reaches `deadline` (0: no deadline).  Events are enabled
 * only inside block(), which checks for pending events atomically.
 */
static void ring_wait_output(XENCONS_RING_IDX limit, uint64_t deadline)
{
    unsigned long flags = local_irq_save();

    ring_notify();
    while (READ_ONCE(ring->out_prod) - READ_ONCE(ring->out_cons) > limit) {
        if (deadline) {
            if (system_time_ns() >= deadline)
                break;
            hypercall_set_timer_op(deadline);
        }
        block();
        local_irq_disable();
    }
    local_irq_restore(flags);
}

static void ring_write(const char *buf, size_t len)
{
    while (len) {
        XENCONS_RING_IDX cons = READ_ONCE(ring->out_cons);
        XENCONS_RING_IDX prod = ring->out_prod;     /* only we write it */
        XENCONS_RING_IDX used = prod - cons;

        /* Read out_cons before reusing the slots it frees. */
        mb();
        if (used >= OUT_SIZE) {
            ring_wait_output(OUT_SIZE - 1, 0);      /* full: never drop */
            continue;
        }
        while (used++ < OUT_SIZE && len) {
            ring->out[prod++ & (OUT_SIZE - 1)] = *buf++;
            len--;
        }
        wmb();      /* the bytes before the index that publishes them */
        WRITE_ONCE(ring->out_prod, prod);
    }
}

void console_write(const char *buf, size_t len)
{
    unsigned long flags;
    size_t start = 0, i;

    if (!ring) {
        hypervisor_console_write(buf, len);
        return;
    }

    /* Keep an upcall handler's output from interleaving with ours. */
    flags = local_irq_save();
    for (i = 0; i < len; i++) {
        if (buf[i] == '\n') {
            ring_write(buf + start, i - start);
            ring_write("\r\n", 2);
            start = i + 1;
        }
    }
    ring_write(buf + start, len - start);
    ring_notify();
    local_irq_restore(flags);
}

void console_flush(void)
{
    if (ring && shared_info)
        ring_wait_output(0, system_time_ns() + FLUSH_TIMEOUT_NS);
}

int console_getc_nowait(void)
{
    XENCONS_RING_IDX cons, prod;
    char c;

    if (!ring)
        return -1;

    cons = ring->in_cons;                   /* only we write it */
    prod = READ_ONCE(ring->in_prod);
    rmb();          /* the index before the bytes it covers */
    if (cons == prod)
        return -1;

    c = ring->in[cons & (IN_SIZE - 1)];
    mb();           /* finish reading the byte before freeing its slot */
    WRITE_ONCE(ring->in_cons, cons + 1);
    ring_notify();
    return (unsigned char)c;
}

int console_getc(void)
{
    unsigned long flags = local_irq_save();
    int c;

    /* Check with events masked; block() unmasks and sleeps atomically. */
    while ((c = console_getc_nowait()) < 0) {
        block();
        local_irq_disable();
    }
    local_irq_restore(flags);
    return c;
}

/* printk formats into a small buffer and writes it out in pieces. */
struct printk_buf {
    char data[128];
    size_t len;
    void (*write)(const char *buf, size_t len);
};

static void printk_putc(void *ctx, char c)
{
    struct printk_buf *pb = ctx;

    pb->data[pb->len++] = c;
    if (pb->len == sizeof(pb->data)) {
        pb->write(pb->data, pb->len);
        pb->len = 0;
    }
}

static void vprintk_to(void (*write)(const char *, size_t),
                       const char *fmt, va_list ap)
{
    struct printk_buf pb = { .len = 0, .write = write };

    vformat(printk_putc, &pb, fmt, ap);
    if (pb.len)
        write(pb.data, pb.len);
}

void printk(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintk_to(console_write, fmt, ap);
    va_end(ap);
}

void early_printk(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintk_to(hypervisor_console_write, fmt, ap);
    va_end(ap);
}
