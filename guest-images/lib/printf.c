/*
 * Formatted output, see printf.h.  64-bit numbers are divided by libgcc's
 * __udivdi3/__umoddi3 only when they do not fit in 32 bits.
 */
#include "printf.h"
#include "string.h"

struct spec {
    bool left;          /* '-' */
    bool zero;          /* '0' */
    bool alt;           /* '#': 0x prefix for %x */
    int width;
    int precision;      /* -1: none */
};

struct emitter {
    void (*out)(void *ctx, char c);
    void *ctx;
    int count;
};

static void emit(struct emitter *e, char c)
{
    e->out(e->ctx, c);
    e->count++;
}

static void emit_pad(struct emitter *e, char c, int n)
{
    while (n-- > 0)
        emit(e, c);
}

static void emit_string(struct emitter *e, const struct spec *sp,
                        const char *s)
{
    int len, i;

    if (!s)
        s = "(null)";
    len = sp->precision >= 0 ? (int)strnlen(s, sp->precision)
                             : (int)strlen(s);
    if (!sp->left)
        emit_pad(e, ' ', sp->width - len);
    for (i = 0; i < len; i++)
        emit(e, s[i]);
    if (sp->left)
        emit_pad(e, ' ', sp->width - len);
}

static void emit_number(struct emitter *e, const struct spec *sp,
                        uint64_t value, unsigned int base, bool negative,
                        bool upper, const char *prefix)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0, len, plen = prefix ? (int)strlen(prefix) : 0;

    do {
        unsigned int d;

        if (value >> 32) {
            d = value % base;
            value /= base;
        } else {
            uint32_t v32 = (uint32_t)value;

            d = v32 % base;
            value = v32 / base;
        }
        tmp[n++] = digits[d];
    } while (value);

    len = n + (negative ? 1 : 0) + plen;
    if (!sp->left && !sp->zero)
        emit_pad(e, ' ', sp->width - len);
    if (negative)
        emit(e, '-');
    while (prefix && *prefix)
        emit(e, *prefix++);
    if (!sp->left && sp->zero)
        emit_pad(e, '0', sp->width - len);
    while (n)
        emit(e, tmp[--n]);
    if (sp->left)
        emit_pad(e, ' ', sp->width - len);
}

int vformat(void (*out)(void *ctx, char c), void *ctx,
            const char *fmt, va_list ap)
{
    struct emitter e = { .out = out, .ctx = ctx, .count = 0 };

    for (; *fmt; fmt++) {
        struct spec sp = { .precision = -1 };
        int longs = 0;
        uint64_t u;
        int64_t s;

        if (*fmt != '%') {
            emit(&e, *fmt);
            continue;
        }

        /* Flags. */
        for (fmt++; *fmt == '-' || *fmt == '0' || *fmt == '#'; fmt++) {
            if (*fmt == '-')
                sp.left = true;
            else if (*fmt == '0')
                sp.zero = true;
            else
                sp.alt = true;
        }
        /* Width. */
        if (*fmt == '*') {
            sp.width = va_arg(ap, int);
            if (sp.width < 0) {
                sp.left = true;
                sp.width = -sp.width;
            }
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9')
                sp.width = sp.width * 10 + (*fmt++ - '0');
        }
        /* Precision (used by %s). */
        if (*fmt == '.') {
            sp.precision = 0;
            if (*++fmt == '*') {
                sp.precision = va_arg(ap, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9')
                    sp.precision = sp.precision * 10 + (*fmt++ - '0');
            }
        }
        /* Length: int, long and size_t are all 32 bits here. */
        for (;; fmt++) {
            if (*fmt == 'l')
                longs++;
            else if (*fmt != 'h' && *fmt != 'z')
                break;
        }

        switch (*fmt) {
        case 'c':
            emit_pad(&e, ' ', sp.left ? 0 : sp.width - 1);
            emit(&e, (char)va_arg(ap, int));
            emit_pad(&e, ' ', sp.left ? sp.width - 1 : 0);
            break;

        case 's':
            emit_string(&e, &sp, va_arg(ap, const char *));
            break;

        case 'd':
        case 'i':
            s = longs >= 2 ? va_arg(ap, long long) : va_arg(ap, long);
            u = s < 0 ? -(uint64_t)s : (uint64_t)s;
            emit_number(&e, &sp, u, 10, s < 0, false, NULL);
            break;

        case 'u':
        case 'x':
        case 'X':
            u = longs >= 2 ? va_arg(ap, unsigned long long)
                           : va_arg(ap, unsigned long);
            emit_number(&e, &sp, u, *fmt == 'u' ? 10 : 16, false,
                        *fmt == 'X', sp.alt && *fmt != 'u' ? "0x" : NULL);
            break;

        case 'p':
            sp.zero = true;
            sp.width = 10;
            emit_number(&e, &sp, (unsigned long)va_arg(ap, void *), 16,
                        false, false, "0x");
            break;

        case '%':
            emit(&e, '%');
            break;

        case '\0':
            fmt--;      /* a lone '%' at the end: stop at the NUL */
            break;

        default:        /* unknown: print it as written */
            emit(&e, '%');
            emit(&e, *fmt);
            break;
        }
    }
    return e.count;
}

struct sbuf {
    char *buf;
    size_t size;
    size_t len;
};

static void sbuf_putc(void *ctx, char c)
{
    struct sbuf *sb = ctx;

    if (sb->len + 1 < sb->size)
        sb->buf[sb->len] = c;
    sb->len++;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct sbuf sb = { .buf = buf, .size = size, .len = 0 };
    int n = vformat(sbuf_putc, &sb, fmt, ap);

    if (size)
        buf[sb.len < size ? sb.len : size - 1] = '\0';
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
