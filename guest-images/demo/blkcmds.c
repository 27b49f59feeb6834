/*
 * The demo's disk commands (see blkcmds.h), on lib/blkfront.
 *
 * The test pattern of sector s written with seed k, byte i:
 *   i < 8: byte i of s (little endian); 8 <= i < 12: byte i-8 of k;
 *   otherwise (k * 7 + s * 13 + i) mod 256
 * so a host can check an image without the guest, and a sector written
 * to the wrong place is caught.
 */
#include "xenguest.h"
#include "blkfront.h"
#include "gnttab.h"
#include "blkcmds.h"

#define ARGS_SIZE       128
#define POOL_SECTORS    (BLK_POOL_PAGES * (PAGE_SIZE / BLK_SECTOR))

static char argbuf[ARGS_SIZE];

static char *args_copy(const char *args)
{
    size_t n = strnlen(args, sizeof(argbuf) - 1);

    memcpy(argbuf, args, n);
    argbuf[n] = '\0';
    return argbuf;
}

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

static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0, base = 10;

    if (!s || !*s)
        return false;
    if (s[0] == '0' && s[1] == 'x') {
        base = 16;
        s += 2;
    }
    for (; *s; s++) {
        uint64_t d;

        if (*s >= '0' && *s <= '9')
            d = (uint64_t)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (uint64_t)(*s - 'a' + 10);
        else
            return false;
        v = v * base + d;
    }
    *out = v;
    return true;
}

static const char *status_name(int st)
{
    switch (st) {
    case BLKIF_RSP_OKAY:        return "ok";
    case BLKIF_RSP_ERROR:       return "BLKIF_RSP_ERROR";
    case BLKIF_RSP_EOPNOTSUPP:  return "BLKIF_RSP_EOPNOTSUPP";
    case -110:                  return "timeout";
    case -105:                  return "not connected";
    default:                    return "?";
    }
}

/* The disk named by the next word; prints usage and returns NULL if none. */
static struct blkfront *disk_arg(char **p, const char *cmd, const char *usage)
{
    char *name = next_word(p);
    struct blkfront *bf;

    if (!name) {
        printk("usage: %s DISK %s\n", cmd, usage);
        return NULL;
    }
    bf = blkfront_find(name);
    if (!bf)
        printk("%s: no disk %s\n", cmd, name);
    return bf;
}

static inline uint8_t pattern(uint32_t seed, uint64_t sector, unsigned int i)
{
    if (i < 8)
        return (uint8_t)(sector >> (8 * i));
    if (i < 12)
        return (uint8_t)(seed >> (8 * (i - 8)));
    return (uint8_t)(seed * 7 + (uint32_t)sector * 13 + i);
}

static void fill(uint32_t seed, uint64_t sector, unsigned int nsect)
{
    unsigned int s, i;

    for (s = 0; s < nsect; s++) {
        uint8_t *p = blkfront_buffer(s / 8) + (s % 8) * BLK_SECTOR;

        for (i = 0; i < BLK_SECTOR; i++)
            p[i] = pattern(seed, sector + s, i);
    }
}

/* The first mismatching sector (or -1) and byte. */
static long check(uint32_t seed, uint64_t sector, unsigned int nsect, unsigned int *byte)
{
    unsigned int s, i;

    for (s = 0; s < nsect; s++) {
        const uint8_t *p = blkfront_buffer(s / 8) + (s % 8) * BLK_SECTOR;

        for (i = 0; i < BLK_SECTOR; i++)
            if (p[i] != pattern(seed, sector + s, i)) {
                *byte = i;
                return (long)s;
            }
    }
    return -1;
}

static void print_disk(struct blkfront *bf)
{
    printk("blk: %s devid %u sectors %llu sector-size %u %s%s ring %u indirect %u%s "
           "persistent %d\n",
           bf->name, bf->devid, bf->sectors, bf->sector_size, bf->readonly ? "ro" : "rw",
           bf->connected ? "" : (bf->broken ? " broken" : " closed"), 1U << bf->ring_order,
           bf->max_indirect, bf->use_indirect ? "" : " (off)", bf->persistent);
}

__noinline void cmd_blk_list(const char *args)
{
    unsigned int i, n = 0;

    (void)args;
    for (i = 0; i < BLK_MAX_DEVS; i++) {
        struct blkfront *bf = blkfront_get(i);

        if (bf) {
            print_disk(bf);
            n++;
        }
    }
    printk("blk-list: %u disk(s)\n", n);
}

/* Write or verify COUNT sectors from SECTOR with SEED, a pool-full at a time. */
static void write_or_verify(const char *args, bool verify)
{
    const char *cmd = verify ? "blk-verify" : "blk-write";
    char *p = args_copy(args);
    struct blkfront *bf = disk_arg(&p, cmd, "SECTOR COUNT SEED");
    uint64_t sector, count, seed, done = 0;

    if (!bf)
        return;
    if (!parse_u64(next_word(&p), &sector) || !parse_u64(next_word(&p), &count) ||
        !parse_u64(next_word(&p), &seed)) {
        printk("usage: %s DISK SECTOR COUNT SEED\n", cmd);
        return;
    }
    while (done < count) {
        unsigned int n = count - done > POOL_SECTORS ? POOL_SECTORS : (unsigned int)(count - done);
        int st;

        if (!verify)
            fill((uint32_t)seed, sector + done, n);
        st = blkfront_rw(bf, !verify, sector + done, n, 0);
        if (st != BLKIF_RSP_OKAY) {
            printk("%s: error %d (%s) at sector %llu\n", cmd, st, status_name(st), sector + done);
            return;
        }
        if (verify) {
            unsigned int byte = 0;
            long bad = check((uint32_t)seed, sector + done, n, &byte);

            if (bad >= 0) {
                printk("%s: MISMATCH at sector %llu byte %u\n", cmd,
                       sector + done + (uint64_t)bad, byte);
                return;
            }
        }
        done += n;
    }
    printk("%s: ok %llu sectors\n", cmd, count);
}

__noinline void cmd_blk_write(const char *args)
{
    write_or_verify(args, false);
}

__noinline void cmd_blk_verify(const char *args)
{
    write_or_verify(args, true);
}

__noinline void cmd_blk_read(const char *args)
{
    char *p = args_copy(args);
    struct blkfront *bf = disk_arg(&p, "blk-read", "SECTOR");
    uint64_t sector;
    const uint8_t *b = blkfront_buffer(0);
    unsigned int i;
    int st;

    if (!bf)
        return;
    if (!parse_u64(next_word(&p), &sector)) {
        printk("usage: blk-read DISK SECTOR\n");
        return;
    }
    st = blkfront_rw(bf, false, sector, 1, 0);
    if (st != BLKIF_RSP_OKAY) {
        printk("blk-read: error %d (%s)\n", st, status_name(st));
        return;
    }
    printk("blk-read:");
    for (i = 0; i < 16; i++)
        printk(" %02x", b[i]);
    printk("\n");
}

__noinline void cmd_blk_flush(const char *args)
{
    char *p = args_copy(args);
    struct blkfront *bf = disk_arg(&p, "blk-flush", "[barrier]");
    char *kind;
    int st;

    if (!bf)
        return;
    kind = next_word(&p);
    st = blkfront_flush(bf, kind && strcmp(kind, "barrier") == 0);
    printk("blk-flush: %s%s\n", st ? "error " : "ok", st ? status_name(st) : "");
}

__noinline void cmd_blk_discard(const char *args)
{
    char *p = args_copy(args);
    struct blkfront *bf = disk_arg(&p, "blk-discard", "SECTOR COUNT [secure]");
    uint64_t sector, count;
    char *secure;
    int st;

    if (!bf)
        return;
    if (!parse_u64(next_word(&p), &sector) || !parse_u64(next_word(&p), &count)) {
        printk("usage: blk-discard DISK SECTOR COUNT [secure]\n");
        return;
    }
    secure = next_word(&p);
    st = blkfront_discard(bf, sector, count, secure && strcmp(secure, "secure") == 0);
    printk("blk-discard: %s%s\n", st ? "error " : "ok", st ? status_name(st) : "");
}

__noinline void cmd_blk_open(const char *args)
{
    char *p = args_copy(args), *o;
    struct blkfront *bf = disk_arg(&p, "blk-open", "[RING-ORDER]");
    uint64_t order;
    int rc;

    if (!bf)
        return;
    o = next_word(&p);
    if (o && !parse_u64(o, &order)) {
        printk("usage: blk-open DISK [RING-ORDER]\n");
        return;
    }
    rc = blkfront_reconnect(bf, o ? (int)order : -1);
    if (rc)
        printk("blk-open: error %d\n", rc);
    else
        printk("blk-open: ok\n");
}

__noinline void cmd_blk_close(const char *args)
{
    char *p = args_copy(args);
    struct blkfront *bf = disk_arg(&p, "blk-close", "");

    if (!bf)
        return;
    blkfront_disconnect(bf);
    printk("blk-close: ok\n");
}

__noinline void cmd_blk_opt(const char *args)
{
    char *p = args_copy(args), *what, *val;
    struct blkfront *bf = disk_arg(&p, "blk-opt", "indirect|persistent on|off");

    if (!bf)
        return;
    what = next_word(&p);
    val = next_word(&p);
    if (what && val && strcmp(what, "indirect") == 0) {
        bf->use_indirect = strcmp(val, "on") == 0 && bf->max_indirect;
        printk("blk-opt: indirect %s\n", bf->use_indirect ? "on" : "off");
    } else if (what && val && strcmp(what, "persistent") == 0) {
        bf->no_persistent = strcmp(val, "on") != 0;
        printk("blk-opt: persistent %s (from the next blk-open)\n",
               bf->no_persistent ? "off" : "on");
    } else {
        printk("usage: blk-opt DISK indirect|persistent on|off\n");
    }
}

static uint32_t rng_state = 12345;

static uint32_t rnd(void)
{
    rng_state = rng_state * 1103515245U + 12345U;
    return rng_state >> 8;
}

/* blk-bench DISK read|write MIB | rand COUNT */
__noinline void cmd_blk_bench(const char *args)
{
    char *p = args_copy(args), *kind;
    struct blkfront *bf = disk_arg(&p, "blk-bench", "read|write MIB | rand COUNT");
    uint64_t n, t0, t1, us, i, bytes = 0;
    int st = 0;

    if (!bf)
        return;
    kind = next_word(&p);
    if (!kind || !parse_u64(next_word(&p), &n) || n == 0) {
        printk("usage: blk-bench DISK read|write MIB | rand COUNT\n");
        return;
    }
    if (strcmp(kind, "rand") == 0) {
        uint64_t slots = bf->sectors / 8;

        if (!slots) {
            printk("blk-bench: disk too small\n");
            return;
        }
        t0 = system_time_ns();
        for (i = 0; i < n && st == 0; i++)
            st = blkfront_rw(bf, false, (rnd() % slots) * 8, 8, 0);
        t1 = system_time_ns();
        us = (t1 - t0) / 1000 ? (t1 - t0) / 1000 : 1;
        if (st)
            printk("blk-bench: error %d (%s)\n", st, status_name(st));
        else
            printk("blk-bench rand: %llu reads of 4 KiB in %llu us: %llu IOPS\n",
                   n, us, n * 1000000ULL / us);
        return;
    } else if (strcmp(kind, "read") == 0 || strcmp(kind, "write") == 0) {
        bool write = kind[0] == 'w';
        uint64_t total = n << 20, sector = 0;
        uint64_t chunk = (uint64_t)POOL_SECTORS * BLK_SECTOR;

        if (total > bf->sectors * BLK_SECTOR)
            total = bf->sectors * BLK_SECTOR / chunk * chunk;
        if (write)
            fill(1, 0, POOL_SECTORS);
        t0 = system_time_ns();
        while (bytes < total && st == 0) {
            st = blkfront_rw(bf, write, sector, POOL_SECTORS, 0);
            sector += POOL_SECTORS;
            bytes += chunk;
        }
        if (write && st == 0)
            st = blkfront_flush(bf, false);
        t1 = system_time_ns();
        us = (t1 - t0) / 1000 ? (t1 - t0) / 1000 : 1;
        if (st)
            printk("blk-bench: error %d (%s)\n", st, status_name(st));
        else
            printk("blk-bench %s: %llu KiB in %llu us: %llu.%02llu MB/s\n", kind,
                   bytes >> 10, us, bytes / us, (bytes * 100 / us) % 100);
        return;
    }
    printk("usage: blk-bench DISK read|write MIB | rand COUNT\n");
}

/* ---- a hostile frontend ---- */
static bool expect(const char *kind, const char *what, int got, int want)
{
    bool ok = got == want;

    printk("blk-evil %s: %s: status %d, expected %d: %s\n", kind, what, got, want,
           ok ? "ok" : "FAIL");
    return ok;
}

static void rw_req(union blkif_entry *e, uint8_t op, uint8_t nseg, uint64_t sector)
{
    unsigned int i;

    memset(e, 0, sizeof(*e));
    e->req.operation = op;
    e->req.nr_segments = nseg;
    e->req.sector_number = sector;
    for (i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
        e->req.seg[i].gref = blkfront_pool_ref(i);
        e->req.seg[i].first_sect = 0;
        e->req.seg[i].last_sect = 7;
    }
}

static int evil(struct blkfront *bf, const char *kind)
{
    union blkif_entry e;
    bool ok = true;
    int st;

    if (strcmp(kind, "gref") == 0) {
        rw_req(&e, BLKIF_OP_READ, 1, 0);
        e.req.seg[0].gref = 0x7fffffff;             /* far beyond the table */
        ok &= expect(kind, "ref beyond the table", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_READ, 3, 0);
        e.req.seg[2].gref = 500;                    /* an entry we never granted */
        ok &= expect(kind, "ungranted ref", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
    } else if (strcmp(kind, "segs") == 0) {
        rw_req(&e, BLKIF_OP_READ, 12, 0);
        ok &= expect(kind, "12 segments", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_READ, 255, 0);
        ok &= expect(kind, "255 segments", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_WRITE, 0, 0);
        ok &= expect(kind, "no segments", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
    } else if (strcmp(kind, "sect") == 0) {
        rw_req(&e, BLKIF_OP_READ, 1, 0);
        e.req.seg[0].first_sect = 5;
        e.req.seg[0].last_sect = 3;
        ok &= expect(kind, "first > last", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_READ, 1, 0);
        e.req.seg[0].last_sect = 8;
        ok &= expect(kind, "last = 8", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_WRITE, 2, 0);
        e.req.seg[1].first_sect = 200;
        e.req.seg[1].last_sect = 255;
        ok &= expect(kind, "sectors 200..255", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
    } else if (strcmp(kind, "outside") == 0) {
        rw_req(&e, BLKIF_OP_READ, 1, bf->sectors - 4);
        ok &= expect(kind, "read across the end", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_WRITE, 1, bf->sectors);
        ok &= expect(kind, "write past the end", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        rw_req(&e, BLKIF_OP_WRITE, 2, 0xFFFFFFFFFFFFFFF8ULL);
        ok &= expect(kind, "sector 2^64-8", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        memset(&e, 0, sizeof(e));
        e.discard.operation = BLKIF_OP_DISCARD;
        e.discard.sector_number = 1;
        e.discard.nr_sectors = bf->sectors;
        st = blkfront_raw_request(bf, &e);
        ok &= expect(kind, "discard past the end", st,
                     bf->feature_discard && !bf->readonly ? BLKIF_RSP_ERROR : st);
    } else if (strcmp(kind, "op") == 0) {
        rw_req(&e, BLKIF_OP_RESERVED_1, 1, 0);
        ok &= expect(kind, "operation 4", blkfront_raw_request(bf, &e), BLKIF_RSP_EOPNOTSUPP);
        rw_req(&e, 200, 1, 0);
        ok &= expect(kind, "operation 200", blkfront_raw_request(bf, &e), BLKIF_RSP_EOPNOTSUPP);
        memset(&e, 0, sizeof(e));
        e.discard.operation = BLKIF_OP_DISCARD;
        e.discard.flag = BLKIF_DISCARD_SECURE;
        e.discard.nr_sectors = 8;
        ok &= expect(kind, "secure discard", blkfront_raw_request(bf, &e),
                     bf->readonly ? BLKIF_RSP_ERROR : BLKIF_RSP_EOPNOTSUPP);
    } else if (strcmp(kind, "indirect") == 0) {
        struct blkif_request_indirect *r = &e.indirect;
        struct blkif_request_segment *segs = bf->indirect_page;
        unsigned int i;

        for (i = 0; i < 4; i++) {
            segs[i].gref = blkfront_pool_ref(i);
            segs[i].first_sect = 0;
            segs[i].last_sect = 7;
        }
        memset(&e, 0, sizeof(e));
        r->operation = BLKIF_OP_INDIRECT;
        r->indirect_op = BLKIF_OP_READ;
        r->nr_segments = 300;
        r->indirect_grefs[0] = bf->indirect_ref;
        ok &= expect(kind, "300 segments", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        r->nr_segments = 0;
        ok &= expect(kind, "0 segments", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        r->nr_segments = 4;
        r->indirect_op = BLKIF_OP_FLUSH_DISKCACHE;
        ok &= expect(kind, "indirect flush", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        r->indirect_op = BLKIF_OP_READ;
        r->indirect_grefs[0] = 0x7ffffff0;
        ok &= expect(kind, "bad indirect page ref", blkfront_raw_request(bf, &e), BLKIF_RSP_ERROR);
        r->indirect_grefs[0] = bf->indirect_ref;
        segs[2].gref = 0x7fffffff;
        ok &= expect(kind, "bad ref in the indirect page", blkfront_raw_request(bf, &e),
                     BLKIF_RSP_ERROR);
        segs[2].gref = blkfront_pool_ref(2);
        segs[3].last_sect = 9;
        ok &= expect(kind, "bad sectors in the indirect page", blkfront_raw_request(bf, &e),
                     BLKIF_RSP_ERROR);
        segs[3].last_sect = 7;
        ok &= expect(kind, "a good indirect read", blkfront_raw_request(bf, &e), BLKIF_RSP_OKAY);
    } else if (strcmp(kind, "pt") == 0) {
        /* our own top-level page table, granted writable: the back end must
         * refuse to write into it (Xen's writable-type rule) */
        unsigned long mfn = virt_to_mfn((void *)start_info->pt_base);
        uint8_t before[64];
        int ref = gnttab_grant_access(0, mfn, false);

        memcpy(before, (void *)start_info->pt_base, sizeof(before));
        rw_req(&e, BLKIF_OP_READ, 1, 0);
        e.req.seg[0].gref = (grant_ref_t)ref;
        ok &= expect(kind, "read into a page table", blkfront_raw_request(bf, &e),
                     BLKIF_RSP_ERROR);
        if (ref >= 0)
            gnttab_end_access((grant_ref_t)ref);
        ok &= expect(kind, "page table unchanged",
                     memcmp(before, (void *)start_info->pt_base, sizeof(before)), 0);
    } else if (strcmp(kind, "ring") == 0) {
        char err[128];
        uint64_t deadline = system_time_ns() + 10 * NSEC_PER_SEC;
        long state;

        blkfront_garbage_index(bf, 1000);
        do {
            sleep_ms(10);
            state = blkfront_backend_state(bf, err, sizeof(err));
        } while (state < 5 && system_time_ns() < deadline);
        printk("blk-evil %s: back end state %ld, error '%s': %s\n", kind, state, err,
               state >= 5 ? "ok" : "FAIL");
        return state >= 5 ? 0 : 1;
    } else {
        printk("usage: blk-evil DISK gref|segs|sect|outside|op|indirect|pt|ring\n");
        return 1;
    }
    /* the disk still works for honest requests */
    st = blkfront_rw(bf, false, 0, 8, 0);
    ok &= expect(kind, "an honest read afterwards", st, BLKIF_RSP_OKAY);
    return ok ? 0 : 1;
}

__noinline void cmd_blk_evil(const char *args)
{
    char *p = args_copy(args), *kind;
    struct blkfront *bf = disk_arg(&p, "blk-evil", "KIND");

    if (!bf)
        return;
    kind = next_word(&p);
    if (!kind) {
        printk("usage: blk-evil DISK gref|segs|sect|outside|op|indirect|pt|ring\n");
        return;
    }
    printk("blk-evil: %s\n", evil(bf, kind) ? "FAIL" : "passed");
}

void blkcmds_init(void)
{
    blkfront_init_all(NULL);
}
