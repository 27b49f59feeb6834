/* hvm-real, 32-bit part: report what real mode saw, then find the FADT
 * (RSDP search, RSDT) and power off through PM1a_CNT (S5 = SLP_TYP 0 on
 * QEMU's PIIX4, as the DSDT says). */
#include <stdint.h>

#include "hvmio.h"

extern uint16_t rm_cs, rm_dx, rm_msw;

#define putc com1_putc

static void puts(const char *s) { while (*s) putc(*s++); }

static void puthex(uint32_t v, int digits)
{
    while (digits--)
        putc("0123456789abcdef"[(v >> (4 * digits)) & 15]);
}

static uint8_t sum(const uint8_t *p, uint32_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s;
}

static uint32_t find_pm1a_cnt(void)
{
    for (uint32_t a = 0xe0000; a < 0x100000; a += 16) {
        const uint8_t *r = (const uint8_t *)a;
        if (r[0] != 'R' || r[1] != 'S' || r[2] != 'D' || r[6] != 'R' || sum(r, 20))
            continue;
        const uint8_t *rsdt = (const uint8_t *)*(const uint32_t *)(r + 16);
        uint32_t n = (*(const uint32_t *)(rsdt + 4) - 36) / 4;
        for (uint32_t i = 0; i < n; i++) {
            const uint8_t *t = (const uint8_t *)((const uint32_t *)(rsdt + 36))[i];
            if (t[0] == 'F' && t[1] == 'A' && t[2] == 'C' && t[3] == 'P')
                return *(const uint32_t *)(t + 64);
        }
    }
    return 0;
}

void main(void)
{
    uint32_t cr0;
    int ok = 1;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    puts("hvm-real: entered at CS ");
    puthex(rm_cs, 4);
    puts(", DL ");
    puthex(rm_dx & 0xff, 2);
    puts(", MSW ");
    puthex(rm_msw, 4);
    puts(rm_msw & 1 ? " (protected!)\n" : " (real mode)\n");
    if (rm_msw & 1 || rm_cs != 0 || (rm_dx & 0xff) != 0x80)
        ok = 0;
    puts("hvm-real: now in protected mode, CR0 ");
    puthex(cr0, 8);
    putc('\n');
    if (!(cr0 & 1))
        ok = 0;
    /* memory above 1 MiB: A20 is on and RAM is there */
    volatile uint32_t *hi = (volatile uint32_t *)0x200000, *lo = (volatile uint32_t *)0x100000;
    *lo = 0x11111111;
    *hi = 0x22222222;
    if (*lo != 0x11111111 || *hi != 0x22222222) {
        puts("hvm-real: memory above 1 MiB is not usable\n");
        ok = 0;
    }
    puts(ok ? "Test result: SUCCESS\n" : "Test result: FAILURE\n");
    uint32_t pm1a = find_pm1a_cnt();
    if (pm1a)
        outw((uint16_t)pm1a, 1u << 13);
    for (volatile uint32_t i = 0; i < 10000000; i++)    /* QEMU stops us soon */
        ;
    puts("hvm-real: ACPI power-off did not work\n");
    outb(0x505, 1);
}
