/*
 * xtfish: a test guest for `qemu-xenpv run-test` and the Python API's
 * tests.  It behaves like a test kernel of an XTF-style framework (it
 * reports "Test result: SUCCESS|SKIP|ERROR|FAILURE" on its console and
 * powers off), but it is our own code: one source, and the outcome is
 * chosen on the kernel command line (extra = "..."), first word that
 * names one:
 *
 *   success   print the result line and power off     (run-test exit 0)
 *   skip      "Test result: SKIP"                      (3)
 *   error     "Test result: ERROR"                     (4)
 *   failure   "Test result: FAILURE"                   (5)
 *   crash     SCHEDOP_shutdown(crash) from xtfish_crash()         (6)
 *   fault     drop the trap table and write to an unmapped address in
 *             xtfish_fault(): the hypervisor crashes the domain and
 *             prints registers and a symbolised call trace         (6)
 *   hang      block forever, no result                           (6, timeout)
 *   spin      a busy loop, no result                              (6, timeout)
 *   silent    power off without a result line                     (6)
 *   reboot    SCHEDOP_shutdown(reboot) at once (with on_reboot =
 *             "restart": a reboot loop, for the life-cycle tests)
 *
 * Without any of these words it succeeds.  "delay=MS" waits MS
 * milliseconds before the outcome; "quiet" prints only the result line.
 */
#include "xenguest.h"

#define UNMAPPED_VA 0x0DEAD000UL

enum outcome { SUCCESS, SKIP, ERROR, FAILURE, CRASH, FAULT, HANG, SPIN, SILENT, REBOOT };

static const char *const words[] = {
    [SUCCESS] = "success", [SKIP] = "skip", [ERROR] = "error", [FAILURE] = "failure",
    [CRASH] = "crash", [FAULT] = "fault", [HANG] = "hang", [SPIN] = "spin",
    [SILENT] = "silent", [REBOOT] = "reboot",
};

static const char *const results[] = {
    [SUCCESS] = "SUCCESS", [SKIP] = "SKIP", [ERROR] = "ERROR", [FAILURE] = "FAILURE",
};

/* Word number `n` of the command line into buf; 0 when there is none. */
static int cmdline_word(int n, char *buf, size_t size)
{
    const char *p = (const char *)start_info->cmd_line;
    const char *end = p + sizeof(start_info->cmd_line);

    for (;;) {
        size_t len = 0;

        while (p < end && *p == ' ')
            p++;
        if (p >= end || *p == '\0')
            return 0;
        while (p + len < end && p[len] && p[len] != ' ')
            len++;
        if (n-- == 0) {
            if (len >= size)
                len = size - 1;
            memcpy(buf, p, len);
            buf[len] = '\0';
            return 1;
        }
        p += len;
    }
}

static unsigned int parse_uint(const char *s)
{
    unsigned int v = 0;

    while (*s >= '0' && *s <= '9')
        v = v * 10 + (unsigned int)(*s++ - '0');
    return v;
}

/* Never inlined, so a crash report and gdb name them. */
void __attribute__((noinline)) __noreturn xtfish_crash(void);
void __attribute__((noinline)) __noreturn xtfish_fault(void);
void __attribute__((noinline)) __noreturn xtfish_hang(void);

void xtfish_crash(void)
{
    printk("xtfish: asking for SHUTDOWN_crash\n");
    xen_shutdown(SHUTDOWN_crash);
}

void xtfish_fault(void)
{
    printk("xtfish: writing to %#lx with no trap table\n", UNMAPPED_VA);
    console_flush();
    hypercall_set_trap_table(NULL);         /* Xen: no handler -> domain_crash */
    *(volatile unsigned long *)UNMAPPED_VA = 0xdeadbeef;
    for (;;)
        ;
}

void xtfish_hang(void)
{
    for (;;) {
        local_irq_disable();
        block();
    }
}

int main(void)
{
    enum outcome what = SUCCESS;
    unsigned int delay_ms = 0;
    int quiet = 0;
    char word[32];

    for (int n = 0; cmdline_word(n, word, sizeof(word)); n++) {
        if (strncmp(word, "delay=", 6) == 0) {
            delay_ms = parse_uint(word + 6);
            continue;
        }
        if (strcmp(word, "quiet") == 0) {
            quiet = 1;
            continue;
        }
        for (unsigned int i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strcmp(word, words[i]) == 0)
                what = (enum outcome)i;
    }

    if (!quiet) {
        printk("--- xtfish: a qemu-xenpv test guest ---\n");
        printk("Environment: PV 32bit (%s)\n",
               strncmp(start_info->magic, "xen-3.0-x86_32p", 16) == 0 ?
               "PAE 3 levels" : "2 levels");
        printk("Outcome: %s\n", words[what]);
    }
    if (delay_ms)
        sleep_ms(delay_ms);

    switch (what) {
    case SUCCESS:
    case SKIP:
    case ERROR:
    case FAILURE:
        if (what == FAILURE)
            printk("Failure: the guest was asked to fail\n");
        if (what == ERROR)
            printk("Error: the guest was asked to report an error\n");
        printk("Test result: %s\n", results[what]);
        return 0;
    case CRASH:
        xtfish_crash();
    case FAULT:
        xtfish_fault();
    case HANG:
        xtfish_hang();
    case SPIN:
        for (;;)
            __asm__ volatile ("pause");
    case SILENT:
        return 0;
    case REBOOT:
        printk("xtfish: rebooting\n");
        xen_shutdown(SHUTDOWN_reboot);
    }
    return 0;
}
