/*
 * Compiler attributes, memory barriers and the few atomic operations the
 * library needs (i686, uniprocessor guest sharing memory with Xen).
 */
#ifndef COMPILER_H
#define COMPILER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define __noreturn      __attribute__((noreturn))
#define __aligned(n)    __attribute__((aligned(n)))
#define __section(s)    __attribute__((section(s)))
#define __used          __attribute__((used))
#define __printf(f, a)  __attribute__((format(printf, f, a)))
/* For functions that must stay real, named functions (gdb breakpoints). */
#define __noinline      __attribute__((noinline, noclone))

#define ARRAY_SIZE(a)   (sizeof(a) / sizeof((a)[0]))

#define barrier()       __asm__ __volatile__ ("" ::: "memory")

/*
 * x86 keeps loads ordered with loads and stores with stores, so the read
 * and write barriers only have to stop the compiler.  A full barrier must
 * also order an earlier store before a later load: a locked instruction
 * does that on every i686 (mfence needs SSE2).
 */
#define rmb()           barrier()
#define wmb()           barrier()
#define mb()            __asm__ __volatile__ ("lock; addl $0, (%%esp)" ::: "memory")

/* Single accesses to memory another agent (Xen, a backend) writes. */
#define READ_ONCE(x)      (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v)  (*(volatile __typeof__(x) *)&(x) = (v))

/* Atomically swap a 32-bit word; a full barrier (xchg is implicitly locked). */
static inline uint32_t xchg32(volatile uint32_t *p, uint32_t v)
{
    __asm__ __volatile__ ("xchg %0, %1" : "+r" (v), "+m" (*p) :: "memory");
    return v;
}

static inline void atomic_set_bit(unsigned int bit, volatile uint32_t *word)
{
    __asm__ __volatile__ ("lock; btsl %1, %0"
                          : "+m" (*word) : "Ir" (bit) : "memory");
}

static inline void atomic_clear_bit(unsigned int bit, volatile uint32_t *word)
{
    __asm__ __volatile__ ("lock; btrl %1, %0"
                          : "+m" (*word) : "Ir" (bit) : "memory");
}

/* Returns the old value of the bit. */
static inline bool atomic_test_and_set_bit(unsigned int bit,
                                           volatile uint32_t *word)
{
    uint8_t old;

    __asm__ __volatile__ ("lock; btsl %2, %0; setc %1"
                          : "+m" (*word), "=qm" (old) : "Ir" (bit) : "memory");
    return old;
}

/* Index of the lowest set bit; x must not be 0. */
static inline unsigned int lowest_bit(uint32_t x)
{
    return __builtin_ctz(x);
}

#endif /* COMPILER_H */
