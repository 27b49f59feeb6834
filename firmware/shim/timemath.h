/*
 * The arithmetic of system time, kept apart from the hardware so that the
 * unit tests compile it on the host (tests/unit/test_shim_time.py).
 *
 * Xen's scale: ns = ((tsc << shift) * mul) >> 32 (set_time_scale()).
 */
#ifndef SHIM_TIMEMATH_H
#define SHIM_TIMEMATH_H

#include <stdint.h>

static inline void time_scale(uint64_t ticks_per_sec, uint32_t *mul, int32_t *shift_out)
{
    int32_t shift = 0;
    uint64_t tps64 = ticks_per_sec;
    while (tps64 > 2000000000ull) {
        tps64 >>= 1;
        shift--;
    }
    uint32_t tps32 = (uint32_t)tps64;
    while (tps32 <= 1000000000u) {
        tps32 <<= 1;
        shift++;
    }
    *mul = (uint32_t)((1000000000ull << 32) / tps32);
    *shift_out = shift;
}

static inline uint64_t scale_delta(uint64_t delta, uint32_t mul, int32_t shift)
{
    if (shift < 0)
        delta >>= -shift;
    else
        delta <<= shift;
    uint64_t lo = (uint64_t)(uint32_t)delta * mul;
    uint64_t hi = (delta >> 32) * mul;
    return hi + (lo >> 32);
}

/* Ticks per second from `ticks` counted over `ns` nanoseconds.  ticks * 1e9
 * does not fit in 64 bits once ticks passes 2^64 / 1e9 (18.4e9: 9.2 s of a
 * 2 GHz TSC), so both are halved until it does; they stay above 2^33, far
 * more precision than a rate needs. */
static inline uint64_t tsc_rate(uint64_t ticks, uint64_t ns)
{
    while (ticks > UINT64_MAX / 1000000000ull) {
        ticks >>= 1;
        ns >>= 1;
    }
    return ns ? ticks * 1000000000ull / ns : 0;
}

#endif
