/*
 * A small printf: %s %c %d %i %u %x %X %p %% with the flags '-', '0', '#',
 * a width (or '*'), a precision for %s, and the length modifiers h, l,
 * ll and z.
 */
#ifndef PRINTF_H
#define PRINTF_H

#include <stdarg.h>

#include "compiler.h"

/* Format into out(ctx, c), one character at a time; returns the count. */
int vformat(void (*out)(void *ctx, char c), void *ctx,
            const char *fmt, va_list ap);

/* Always NUL-terminates (if size > 0); returns the untruncated length. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);

#endif /* PRINTF_H */
