/* Freestanding helpers and the panic path. */
#include "shim.h"

void *memcpy(void *d, const void *s, size_t n)
{
    void *ret = d;
    __asm__ __volatile__("rep movsb" : "+D"(d), "+S"(s), "+c"(n) :: "memory");
    return ret;
}

void *memset(void *d, int c, size_t n)
{
    void *ret = d;
    __asm__ __volatile__("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return ret;
}

static char *put_hex(char *p, uint32_t v)
{
    *p++ = '0';
    *p++ = 'x';
    for (int i = 7; i >= 0; i--)
        *p++ = "0123456789abcdef"[(v >> (i * 4)) & 15];
    return p;
}

/* A shim bug: say so in shim_boot.panic and tell Python, which crashes the
 * domain (never the hypervisor process). */
void panic(const char *msg, uint32_t a, uint32_t b)
{
    char *p = shim_boot.panic, *end = p + sizeof(shim_boot.panic) - 24;
    while (*msg && p < end)
        *p++ = *msg++;
    *p++ = ' ';
    p = put_hex(p, a);
    *p++ = ' ';
    p = put_hex(p, b);
    *p = 0;
    shim_boot.status = SHIM_STATUS_PANIC;
    struct shim_vcpu *v = this_vcpu();
    if (v) {
        struct shim_mbox *m = (struct shim_mbox *)v->mbox;
        m->req_kind = SHIM_REQ_PANIC;
        mb();
        m->req_seq++;
        mb();
        doorbell_ring(v);
    }
    for (;;)
        __asm__ __volatile__("cli; hlt");
}
