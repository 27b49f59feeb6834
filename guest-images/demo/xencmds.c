/*
 * The demo's inter-domain commands (see xencmds.h).  Output lines start
 * with the command's name so a test can wait for them.
 */
#include "xenguest.h"
#include "control.h"
#include "gnttab.h"
#include "interdomain.h"
#include "work.h"
#include "xenstore.h"
#include "xencmds.h"

#define ARGS_SIZE       128
#define VALUE_SIZE      1024
#define WATCH_TIMEOUT   (60 * NSEC_PER_SEC)
#define PONG_TIMEOUT    (3 * NSEC_PER_SEC)
#define NR_SHARED       4

/* ---- argument parsing ---- */
static char argbuf[ARGS_SIZE];

/* A private, writable copy of the arguments. */
static char *args_copy(const char *args)
{
    size_t n = strnlen(args, sizeof(argbuf) - 1);

    memcpy(argbuf, args, n);
    argbuf[n] = '\0';
    return argbuf;
}

/* The next space-separated word (NUL-terminated in place), or NULL. */
static char *next_word(char **p)
{
    char *w = *p, *e;

    while (*w == ' ')
        w++;
    if (!*w)
        return NULL;
    for (e = w; *e && *e != ' '; e++)
        ;
    if (*e)
        *e++ = '\0';
    *p = e;
    return w;
}

/* The rest of the line after leading spaces. */
static char *rest(char **p)
{
    while (**p == ' ')
        (*p)++;
    return *p;
}

static bool parse_num(const char *s, unsigned long *out)
{
    unsigned long v = 0, base = 10;

    if (!s || !*s)
        return false;
    if (s[0] == '0' && s[1] == 'x') {
        base = 16;
        s += 2;
    }
    for (; *s; s++) {
        unsigned long d;

        if (*s >= '0' && *s <= '9')
            d = (unsigned long)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned long)(*s - 'a' + 10);
        else
            return false;
        v = v * base + d;
    }
    *out = v;
    return true;
}

/* ---- XenStore ---- */
static char value[VALUE_SIZE];

__noinline void cmd_xs_read(const char *args)
{
    int rc = xs_read(XBT_NULL, args, value, sizeof(value));

    if (rc < 0)
        printk("xs-read: %s\n", xs_strerror(rc));
    else
        printk("%s\n", value);
}

__noinline void cmd_xs_write(const char *args)
{
    char *p = args_copy(args), *path = next_word(&p);
    int rc;

    if (!path) {
        printk("usage: xs-write PATH VALUE\n");
        return;
    }
    rc = xs_write(XBT_NULL, path, rest(&p));
    printk("xs-write: %s\n", rc ? xs_strerror(rc) : "ok");
}

__noinline void cmd_xs_rm(const char *args)
{
    int rc = xs_rm(XBT_NULL, args);

    printk("xs-rm: %s\n", rc ? xs_strerror(rc) : "ok");
}

__noinline void cmd_xs_ls(const char *args)
{
    int n = xs_directory(XBT_NULL, *args ? args : "", value, sizeof(value));
    int i;

    if (n < 0) {
        printk("xs-ls: %s\n", xs_strerror(n));
        return;
    }
    for (i = 0; i < n; i += (int)strlen(value + i) + 1)
        printk("%s\n", value + i);
}

__noinline void cmd_xs_watch(const char *args)
{
    char *p = args_copy(args), *path = next_word(&p), *count_s = next_word(&p);
    unsigned long count = 2, i;
    char event[128];
    int rc;

    if (!path || (count_s && !parse_num(count_s, &count))) {
        printk("usage: xs-watch PATH [COUNT]\n");
        return;
    }
    rc = xs_watch(path, "demo-watch");
    if (rc) {
        printk("xs-watch: %s\n", xs_strerror(rc));
        return;
    }
    printk("xs-watch: watching %s\n", path);
    for (i = 0; i < count; i++) {
        if (!xs_read_watch("demo-watch", event, sizeof(event),
                           system_time_ns() + WATCH_TIMEOUT)) {
            printk("xs-watch: timeout\n");
            break;
        }
        printk("watch: %s\n", event);
    }
    xs_unwatch(path, "demo-watch");
    printk("xs-watch: done\n");
}

static xs_transaction_t tx;

__noinline void cmd_xs_tx(const char *args)
{
    char *p = args_copy(args), *op = next_word(&p), *path;
    int rc;

    if (op && strcmp(op, "start") == 0) {
        rc = xs_transaction_start(&tx);
        if (rc)
            printk("xs-tx: %s\n", xs_strerror(rc));
        else
            printk("xs-tx: started %u\n", tx);
        return;
    }
    if (op && strcmp(op, "read") == 0 && (path = next_word(&p))) {
        rc = xs_read(tx, path, value, sizeof(value));
        printk("xs-tx: %s\n", rc < 0 ? xs_strerror(rc) : value);
        return;
    }
    if (op && strcmp(op, "write") == 0 && (path = next_word(&p))) {
        rc = xs_write(tx, path, rest(&p));
        printk("xs-tx: %s\n", rc ? xs_strerror(rc) : "ok");
        return;
    }
    if (op && (strcmp(op, "commit") == 0 || strcmp(op, "abort") == 0)) {
        bool abort = op[0] == 'a';

        rc = xs_transaction_end(tx, abort);
        tx = XBT_NULL;
        if (rc)
            printk("xs-tx: %s failed: %s\n", op, xs_strerror(rc));
        else
            printk("xs-tx: %s\n", abort ? "aborted" : "committed");
        return;
    }
    printk("usage: xs-tx start | read PATH | write PATH VALUE | commit | abort\n");
}

/* ---- event channels ---- */
static volatile unsigned int port_events[NR_EVENT_CHANNELS];

static void count_event(evtchn_port_t port, void *data)
{
    (void)data;
    port_events[port]++;
}

/* Wait until port has seen more than `seen` events; false on timeout. */
static bool wait_port(evtchn_port_t port, unsigned int seen, uint64_t deadline)
{
    unsigned long flags = local_irq_save();
    bool ok = true;

    while (READ_ONCE(port_events[port]) <= seen) {
        if (system_time_ns() >= deadline) {
            ok = false;
            break;
        }
        block();
        local_irq_disable();
    }
    local_irq_restore(flags);
    return ok;
}

static void watch_port(evtchn_port_t port)
{
    port_events[port] = 0;
    evtchn_set_handler(port, count_event, NULL);
    evtchn_unmask(port);
}

__noinline void cmd_evtchn_listen(const char *args)
{
    char *p = args_copy(args), *dom_s = next_word(&p), *count_s = next_word(&p);
    char *quiet_s = next_word(&p);
    bool quiet = quiet_s && strcmp(quiet_s, "q") == 0;
    unsigned long dom, count = 1, i;
    long port;

    if (!parse_num(dom_s, &dom) || (count_s && !parse_num(count_s, &count))) {
        printk("usage: evtchn-listen DOMID [COUNT [q]]\n");
        return;
    }
    port = evtchn_alloc_unbound((domid_t)dom);
    if (port < 0) {
        printk("evtchn-listen: alloc_unbound failed: %ld\n", port);
        return;
    }
    watch_port((evtchn_port_t)port);
    printk("evtchn-listen: port %ld for domain %lu\n", port, dom);
    for (i = 0; i < count; i++) {
        if (!wait_port((evtchn_port_t)port, (unsigned int)i,
                       system_time_ns() + WATCH_TIMEOUT)) {
            printk("evtchn-listen: timeout\n");
            break;
        }
        evtchn_send((evtchn_port_t)port);
        if (!quiet)
            printk("evtchn-listen: ping %lu, pong sent\n", i + 1);
    }
    evtchn_set_handler((evtchn_port_t)port, NULL, NULL);
    evtchn_close((evtchn_port_t)port);
    printk("evtchn-listen: done\n");
}

/* ---- measurements (make bench) ---- */
#define MAX_SAMPLES     2000
static uint32_t samples[MAX_SAMPLES];

/* Sort samples[0..n) (insertion sort: n is small). */
static void sort_samples(unsigned int n)
{
    unsigned int i, j;

    for (i = 1; i < n; i++) {
        uint32_t v = samples[i];

        for (j = i; j > 0 && samples[j - 1] > v; j--)
            samples[j] = samples[j - 1];
        samples[j] = v;
    }
}

static void print_stats(const char *what, unsigned int n)
{
    if (!n)
        return;
    sort_samples(n);
    printk("%s: %u samples, median_ns=%u p99_ns=%u\n", what, n, samples[n / 2],
           samples[n * 99 / 100]);
}

__noinline void cmd_xs_bench(const char *args)
{
    unsigned long count = 200, i;
    char v[16];

    if (*args && !parse_num(args, &count))
        count = 0;
    if (count == 0 || count > MAX_SAMPLES) {
        printk("usage: xs-bench [COUNT] (1..%d)\n", MAX_SAMPLES);
        return;
    }
    for (i = 0; i < count; i++) {
        uint64_t t0 = system_time_ns();

        if (xs_read(XBT_NULL, "domid", v, sizeof(v)) < 0) {
            printk("xs-bench: read failed\n");
            return;
        }
        samples[i] = (uint32_t)(system_time_ns() - t0);
    }
    print_stats("xs-bench", (unsigned int)count);
}

__noinline void cmd_evtchn_ping(const char *args)
{
    char *p = args_copy(args), *dom_s = next_word(&p), *port_s = next_word(&p);
    char *count_s = next_word(&p), *quiet_s = next_word(&p);
    bool quiet = quiet_s && strcmp(quiet_s, "q") == 0;
    unsigned long dom, rport, count = 1, i;
    long port;

    if (!parse_num(dom_s, &dom) || !parse_num(port_s, &rport) ||
        (count_s && !parse_num(count_s, &count))) {
        printk("usage: evtchn-ping DOMID PORT [COUNT [q]]\n");
        return;
    }
    port = evtchn_bind_interdomain((domid_t)dom, (evtchn_port_t)rport);
    if (port < 0) {
        printk("evtchn-ping: bind_interdomain failed: %ld\n", port);
        return;
    }
    watch_port((evtchn_port_t)port);
    printk("evtchn-ping: bound local port %ld\n", port);
    for (i = 0; i < count; i++) {
        uint64_t t0 = system_time_ns();

        evtchn_send((evtchn_port_t)port);
        if (!wait_port((evtchn_port_t)port, (unsigned int)i, t0 + PONG_TIMEOUT)) {
            printk("evtchn-ping: timeout\n");
            break;
        }
        if (i < MAX_SAMPLES)
            samples[i] = (uint32_t)(system_time_ns() - t0);
        if (!quiet)
            printk("evtchn-ping: pong %lu after %llu us\n", i + 1,
                   (system_time_ns() - t0) / 1000);
    }
    if (quiet)
        print_stats("evtchn-ping", (unsigned int)(i < MAX_SAMPLES ? i : MAX_SAMPLES));
    evtchn_set_handler((evtchn_port_t)port, NULL, NULL);
    evtchn_close((evtchn_port_t)port);
    printk("evtchn-ping: done\n");
}

/* ---- grants ---- */
static uint8_t shared[NR_SHARED][PAGE_SIZE] __aligned(PAGE_SIZE);
static int shared_ref[NR_SHARED];
static uint8_t bounce[PAGE_SIZE] __aligned(PAGE_SIZE);

static int my_domid(void)
{
    char id[8];
    unsigned long v;

    if (xs_read(XBT_NULL, "domid", id, sizeof(id)) < 0 || !parse_num(id, &v))
        return -1;
    return (int)v;
}

__noinline void cmd_gnt_share(const char *args)
{
    char *p = args_copy(args), *dom_s = next_word(&p), *text;
    unsigned long dom;
    bool ro = false;
    int slot, ref;

    if (!parse_num(dom_s, &dom)) {
        printk("usage: gnt-share DOMID [ro] [TEXT]\n");
        return;
    }
    text = rest(&p);
    if (strncmp(text, "ro", 2) == 0 && (text[2] == ' ' || text[2] == '\0')) {
        ro = true;
        text += 2;
        text = rest(&text);
    }
    for (slot = 0; slot < NR_SHARED; slot++)
        if (!shared_ref[slot])
            break;
    if (slot == NR_SHARED) {
        printk("gnt-share: all %d pages are shared (gnt-end one)\n", NR_SHARED);
        return;
    }
    memset(shared[slot], 0, PAGE_SIZE);
    if (*text)
        memcpy(shared[slot], text, strlen(text));
    else
        snprintf((char *)shared[slot], PAGE_SIZE, "hello from domain %d", my_domid());
    ref = gnttab_grant_access((domid_t)dom, virt_to_mfn(shared[slot]), ro);
    if (ref < 0) {
        printk("gnt-share: failed: %d\n", ref);
        return;
    }
    shared_ref[slot] = ref;
    printk("gnt-share: ref %d frame %#lx%s\n", ref, virt_to_mfn(shared[slot]),
           ro ? " read-only" : "");
}

static int slot_of(unsigned long ref)
{
    int slot;

    for (slot = 0; slot < NR_SHARED; slot++)
        if (shared_ref[slot] && (unsigned long)shared_ref[slot] == ref)
            return slot;
    return -1;
}

__noinline void cmd_gnt_show(const char *args)
{
    unsigned long ref;
    int slot;

    if (!parse_num(args, &ref) || (slot = slot_of(ref)) < 0) {
        printk("usage: gnt-show REF (a ref from gnt-share)\n");
        return;
    }
    printk("gnt-show: ref %lu flags %#x: %.200s\n", ref, gnttab_entry(ref).flags,
           (const char *)shared[slot]);
}

__noinline void cmd_gnt_end(const char *args)
{
    unsigned long ref;
    int slot, rc;

    if (!parse_num(args, &ref) || (slot = slot_of(ref)) < 0) {
        printk("usage: gnt-end REF (a ref from gnt-share)\n");
        return;
    }
    rc = gnttab_end_access(ref);
    if (rc) {
        printk("gnt-end: ref %lu busy (%d)\n", ref, rc);
        return;
    }
    shared_ref[slot] = 0;
    printk("gnt-end: ref %lu revoked\n", ref);
}

__noinline void cmd_gnt_copy(const char *args)
{
    char *p = args_copy(args), *dom_s = next_word(&p), *ref_s = next_word(&p);
    unsigned long dom, ref;
    struct gnttab_copy op;
    int rc;

    if (!parse_num(dom_s, &dom) || !parse_num(ref_s, &ref)) {
        printk("usage: gnt-copy DOMID REF\n");
        return;
    }
    memset(bounce, 0, sizeof(bounce));
    memset(&op, 0, sizeof(op));
    op.source.u.ref = ref;
    op.source.domid = (domid_t)dom;
    op.dest.u.gmfn = virt_to_mfn(bounce);
    op.dest.domid = DOMID_SELF;
    op.len = PAGE_SIZE;
    op.flags = GNTCOPY_source_gref;
    rc = gnttab_copy_one(&op);
    if (rc)
        printk("gnt-copy: status %d\n", rc);
    else
        printk("gnt-copy: '%.200s'\n", (const char *)bounce);
}

__noinline void cmd_gnt_put(const char *args)
{
    char *p = args_copy(args), *dom_s = next_word(&p), *ref_s = next_word(&p);
    unsigned long dom, ref;
    struct gnttab_copy op;
    char *text;
    int rc;

    if (!parse_num(dom_s, &dom) || !parse_num(ref_s, &ref)) {
        printk("usage: gnt-put DOMID REF TEXT\n");
        return;
    }
    text = rest(&p);
    memset(bounce, 0, sizeof(bounce));
    memcpy(bounce, text, strlen(text));
    memset(&op, 0, sizeof(op));
    op.source.u.gmfn = virt_to_mfn(bounce);
    op.source.domid = DOMID_SELF;
    op.dest.u.ref = ref;
    op.dest.domid = (domid_t)dom;
    op.len = (uint16_t)(strlen(text) + 1);
    op.flags = GNTCOPY_dest_gref;
    rc = gnttab_copy_one(&op);
    if (rc)
        printk("gnt-put: status %d\n", rc);
    else
        printk("gnt-put: ok\n");
}

/* Is word on the kernel command line? */
static bool cmdline_has(const char *word)
{
    const char *p = start_info->cmd_line;
    size_t n = strlen(word);

    for (; *p; p++)
        if ((p == start_info->cmd_line || p[-1] == ' ') && strncmp(p, word, n) == 0 &&
            (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

static void start_control(void *data)
{
    int rc = control_init();

    (void)data;
    if (rc)
        printk("control: cannot watch control/shutdown: %s\n", xs_strerror(rc));
}

static struct work control_work;

void xencmds_init(void)
{
    /* "nocontrol": ignore control/shutdown, as a guest without PV drivers */
    if (!xs_ready() || cmdline_has("nocontrol"))
        return;
    /* Once the shell idles: the prompt is not kept waiting for XenStore
     * (a request made meanwhile is seen when the watch fires at once). */
    work_init(&control_work, start_control, NULL);
    work_raise(&control_work);
}
