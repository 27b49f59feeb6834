/*
 * Console: early output through console_io, then the PV console ring.
 */
#ifndef CONSOLE_H
#define CONSOLE_H

#include "compiler.h"
#include "xen-abi.h"

/* Use the ring from start_info (not for dom0, which has none). */
void console_init(const start_info_t *si);

/* Write len bytes; "\n" goes out as "\r\n".  Never drops output. */
void console_write(const char *buf, size_t len);

/* Wait (bounded) until the backend has consumed everything written. */
void console_flush(void);

/* Next input byte, or -1 if none is waiting. */
int console_getc_nowait(void);
/* Next input byte; blocks the vCPU until one arrives. */
int console_getc(void);

/* Formatted output to the console (the ring once it is set up). */
void printk(const char *fmt, ...) __printf(1, 2);

/* Formatted output through the console_io hypercall, always. */
void early_printk(const char *fmt, ...) __printf(1, 2);

#endif /* CONSOLE_H */
