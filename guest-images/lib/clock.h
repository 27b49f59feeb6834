/*
 * Time: Xen system time (ns since the domain's clock started), wall
 * clock, and a one-shot timer for sleeping.
 */
#ifndef CLOCK_H
#define CLOCK_H

#include "compiler.h"

#define NSEC_PER_SEC    1000000000ULL
#define NSEC_PER_MSEC   1000000ULL

/* Bind VIRQ_TIMER (needs shared_info). */
void clock_init(void);

/* System time in ns, extrapolated from vcpu_info.time with the TSC. */
uint64_t system_time_ns(void);

/* Wall-clock time: Xen's boot-time wall clock plus system time. */
void wallclock(uint64_t *sec, uint32_t *nsec);

/* Block until system time reaches deadline_ns (events keep running). */
void sleep_until(uint64_t deadline_ns);
void sleep_ms(unsigned int ms);

/* Number of VIRQ_TIMER events seen so far. */
unsigned long timer_events(void);

#endif /* CLOCK_H */
