/*
 * What every HVM test guest (guest-images/hvm-*) needs of the emulated PC:
 * port I/O and COM1 (the 16550 whose output is the domain's console).
 * Header-only: each guest has its own Makefile and links nothing shared.
 */
#ifndef HVMIO_H
#define HVMIO_H

#include <stdint.h>

#define COM1_PORT       0x3f8

static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }

/* One byte to COM1 once its transmitter is empty ("\n" is not expanded). */
static inline void com1_put_raw(char c)
{
    while (!(inb(COM1_PORT + 5) & 0x20))
        ;
    outb(COM1_PORT, (uint8_t)c);
}

/* One character to COM1, "\n" as "\r\n" (a terminal's line ending). */
static inline void com1_putc(char c)
{
    if (c == '\n')
        com1_put_raw('\r');
    com1_put_raw(c);
}

#endif
