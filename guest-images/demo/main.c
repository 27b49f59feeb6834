/*
 * qemu-xenpv demo guest: prints a banner (Xen version, time) and runs a
 * tiny command shell on the PV console.
 *
 * Each command is its own non-static, never-inlined function cmd_<name>
 * so a debugger can break on it and see it in a backtrace.
 */
#include "xenguest.h"
#include "work.h"
#include "xencmds.h"
#include "netcmds.h"
#include "blkcmds.h"

#define LINE_SIZE   128

void cmd_help(const char *args);
void cmd_echo(const char *args);
void cmd_uptime(const char *args);
void cmd_poweroff(const char *args);
void cmd_crash(const char *args);

struct command {
    const char *name;
    void (*fn)(const char *args);
    const char *help;
};

static const struct command commands[] = {
    { "help",     cmd_help,     "list the commands" },
    { "echo",     cmd_echo,     "echo TEXT: print TEXT" },
    { "uptime",   cmd_uptime,   "time since the domain started" },
    { "poweroff", cmd_poweroff, "shut the domain down" },
    { "crash",    cmd_crash,    "write to an unmapped address (fatal #PF)" },
    { "xs-read",  cmd_xs_read,  "xs-read PATH: print a XenStore value" },
    { "xs-write", cmd_xs_write, "xs-write PATH VALUE: write a XenStore value" },
    { "xs-rm",    cmd_xs_rm,    "xs-rm PATH: remove a XenStore node" },
    { "xs-ls",    cmd_xs_ls,    "xs-ls PATH: list a XenStore directory" },
    { "xs-watch", cmd_xs_watch, "xs-watch PATH [COUNT]: print COUNT watch events (2)" },
    { "xs-tx",    cmd_xs_tx,    "xs-tx start|read P|write P V|commit|abort" },
    { "xs-bench", cmd_xs_bench, "xs-bench [COUNT]: time XenStore reads" },
    { "evtchn-listen", cmd_evtchn_listen, "evtchn-listen DOMID [COUNT [q]]: answer pings" },
    { "evtchn-ping", cmd_evtchn_ping, "evtchn-ping DOMID PORT [COUNT [q]]: ping a listener" },
    { "gnt-share", cmd_gnt_share, "gnt-share DOMID [ro] [TEXT]: grant a page" },
    { "gnt-show", cmd_gnt_show, "gnt-show REF: our shared page and its flags" },
    { "gnt-end",  cmd_gnt_end,  "gnt-end REF: revoke a grant" },
    { "gnt-copy", cmd_gnt_copy, "gnt-copy DOMID REF: grant-copy a page here" },
    { "gnt-put",  cmd_gnt_put,  "gnt-put DOMID REF TEXT: grant-copy TEXT there" },
    { "ip",       cmd_ip,       "ip [show] | ip set A.B.C.D[/N] [VIF]: addresses" },
    { "ping",     cmd_ping,     "ping IP [COUNT [SIZE]]: ICMP echo" },
    { "udp",      cmd_udp,      "udp send IP PORT TEXT | blast IP PORT SIZE COUNT | stats" },
    { "net",      cmd_net,      "net stats | spoof IP | hold on|off | evil KIND: netfront" },
    { "blk-list", cmd_blk_list, "blk-list: the disks (blkfront)" },
    { "blk-write", cmd_blk_write, "blk-write DISK SECTOR COUNT SEED: write a test pattern" },
    { "blk-verify", cmd_blk_verify, "blk-verify DISK SECTOR COUNT SEED: check the pattern" },
    { "blk-read", cmd_blk_read, "blk-read DISK SECTOR: the first bytes of a sector" },
    { "blk-flush", cmd_blk_flush, "blk-flush DISK [barrier]: flush the disk cache" },
    { "blk-discard", cmd_blk_discard, "blk-discard DISK SECTOR COUNT [secure]" },
    { "blk-open", cmd_blk_open, "blk-open DISK [RING-ORDER]: (re)connect a disk" },
    { "blk-close", cmd_blk_close, "blk-close DISK: disconnect a disk" },
    { "blk-opt",  cmd_blk_opt,  "blk-opt DISK indirect|persistent on|off" },
    { "blk-bench", cmd_blk_bench, "blk-bench DISK read|write MIB | rand COUNT" },
    { "blk-evil", cmd_blk_evil, "blk-evil DISK KIND: a hostile frontend's requests" },
};

__noinline void cmd_help(const char *args)
{
    size_t i;

    (void)args;
    printk("Commands:\n");
    for (i = 0; i < ARRAY_SIZE(commands); i++)
        printk("  %-10s %s\n", commands[i].name, commands[i].help);
}

__noinline void cmd_echo(const char *args)
{
    printk("%s\n", args);
}

__noinline void cmd_uptime(const char *args)
{
    uint64_t ns = system_time_ns();

    (void)args;
    printk("up %llu.%03llu s\n", ns / NSEC_PER_SEC,
           (ns / NSEC_PER_MSEC) % 1000);
}

__noinline void cmd_poweroff(const char *args)
{
    (void)args;
    printk("Powering off.\n");
    xen_shutdown(SHUTDOWN_poweroff);
}

__noinline void cmd_crash(const char *args)
{
    /* Only VA 0..4 MiB is mapped at boot: this #PF is fatal. */
    volatile uint32_t *unmapped = (volatile uint32_t *)0x0DEAD000;

    (void)args;
    printk("Crashing the guest...\n");
    *unmapped = 0xdeadbeef;
    printk("crash: the write to %p did not fault!\n", unmapped);
}

static void print_banner(void)
{
    char extra[XEN_EXTRAVERSION_LEN + 1];
    uint64_t sec, now;
    uint32_t nsec;
    long version;

    printk("\nqemu-xenpv demo guest\n");

    version = hypercall_xen_version(XENVER_version, NULL);
    memset(extra, 0, sizeof(extra));
    if (hypercall_xen_version(XENVER_extraversion, extra) < 0)
        extra[0] = '\0';
    extra[XEN_EXTRAVERSION_LEN] = '\0';
    if (version < 0)
        printk("Xen version unknown (xen_version: %ld)\n", version);
    else
        printk("Xen version %lu.%lu%s\n", (unsigned long)version >> 16,
               (unsigned long)version & 0xffff, extra);

    wallclock(&sec, &nsec);
    now = system_time_ns();
    printk("Time: wallclock %llu.%09u s, system time %llu ns\n",
           sec, nsec, now);
    printk("Type 'help' for the commands.\n");
}

static void echo_char(char c)
{
    console_write(&c, 1);
}

/*
 * Read one line with echo.  CR or LF ends it (CR LF counts once);
 * backspace or DEL erases; other control bytes are ignored.
 */
static void read_line(char *buf, size_t size)
{
    static bool after_cr;
    size_t len = 0;

    for (;;) {
        int c = console_getc_or_work();     /* XenStore watches run meanwhile */
        bool was_cr = after_cr;

        after_cr = (c == '\r');
        if (c == '\n' && was_cr)
            continue;
        if (c == '\r' || c == '\n') {
            echo_char('\n');
            break;
        }
        if (c == 0x7f || c == 0x08) {
            if (len) {
                len--;
                console_write("\b \b", 3);
            }
            continue;
        }
        if (c < 0x20 || c > 0x7e)
            continue;
        if (len + 1 < size) {
            buf[len++] = (char)c;
            echo_char((char)c);
        }
    }
    buf[len] = '\0';
}

/* Device discovery (XenStore scans, frontends connecting) runs once the
 * prompt is up, as deferred work: the shell does not wait for it, and any
 * command still finds it done (work_run() below). */
static struct work probe_work;

static void probe_devices(void *data)
{
    (void)data;
    netcmds_init();
    blkcmds_init();
}

static void run_command(char *line)
{
    char *word, *args;
    size_t i;

    work_run();             /* what was raised meanwhile, device probing first */

    for (word = line; *word == ' ' || *word == '\t'; word++)
        ;
    if (!*word)
        return;
    for (args = word; *args && *args != ' ' && *args != '\t'; args++)
        ;
    if (*args) {
        *args++ = '\0';
        while (*args == ' ' || *args == '\t')
            args++;
    }

    for (i = 0; i < ARRAY_SIZE(commands); i++) {
        if (strcmp(word, commands[i].name) == 0) {
            commands[i].fn(args);
            return;
        }
    }
    printk("unknown command: %s\n", word);
}

int main(void)
{
    char line[LINE_SIZE];

    print_banner();
    xencmds_init();
    work_init(&probe_work, probe_devices, NULL);
    work_raise(&probe_work);
    for (;;) {
        printk("demo> ");
        read_line(line, sizeof(line));
        run_command(line);
    }
}
