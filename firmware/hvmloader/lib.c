/* String helpers, the COM1 console and a small printf. */
#include "hvmloader.h"

#define COM1            0x3f8

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, size_t n)
{
    uint8_t *dp = d;
    while (n--)
        *dp++ = (uint8_t)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* 115200 8N1 with FIFOs; the guest may reprogram it later. */
void uart_init(void)
{
    outb(COM1 + 1, 0x00);           /* IER: no interrupts              */
    outb(COM1 + 3, 0x80);           /* LCR: DLAB                       */
    outb(COM1 + 0, 0x01);           /* divisor 1: 115200               */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);           /* 8N1                             */
    outb(COM1 + 2, 0xc7);           /* FIFO on, cleared                */
    outb(COM1 + 4, 0x03);           /* DTR, RTS                        */
}

void putchar(char c)
{
    if (c == '\n')
        putchar('\r');
    for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
        ;
    outb(COM1, (uint8_t)c);
}

void puts(const char *s)
{
    while (*s)
        putchar(*s++);
}

static void put_num(uint32_t v, unsigned base, int width, char pad, int neg)
{
    char buf[12];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        buf[n++] = '-';
    while (n < width--)
        putchar(pad);
    while (n)
        putchar(buf[--n]);
}

int vprintf(const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putchar(*fmt);
            continue;
        }
        char pad = ' ';
        int width = 0;
        fmt++;
        if (*fmt == '0')
            pad = '0', fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 'd': {
            int32_t v = va_arg(ap, int32_t);
            put_num(v < 0 ? (uint32_t)-v : (uint32_t)v, 10, width, pad, v < 0);
            break;
        }
        case 'u':
            put_num(va_arg(ap, uint32_t), 10, width, pad, 0);
            break;
        case 'x':
            put_num(va_arg(ap, uint32_t), 16, width, pad, 0);
            break;
        case 'c':
            putchar((char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            puts(s ? s : "(null)");
            break;
        }
        case '%':
            putchar('%');
            break;
        default:
            putchar('?');
            break;
        }
    }
    return 0;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    return 0;
}

/* ACPI soft-off through the PIIX4 PM block pci_setup() enabled: SLP_TYP 0
 * is S5 on QEMU's PIIX4 (as our DSDT's \_S5 says).                     */
void power_off(void)
{
    outw(HVM_PM_BASE + 4, (uint16_t)(1u << 13));
    for (;;)
        __asm__ volatile("cli; hlt");
}

void fail(const char *why)
{
    struct hvm_boot_info *bi = (struct hvm_boot_info *)HVM_BOOT_INFO;
    printf("hvmloader: FATAL: %s\n", why);
    bi->status = HVM_STATUS_FAILED;
    outb(0x505, 1);                 /* pvpanic: the domain crashes       */
    for (;;)
        __asm__ volatile("cli; hlt");
}
