/*
 * Deferred work: what an event handler (upcall context, events masked)
 * must not do itself -- talk to XenStore, print at length, shut down --
 * it raises, and the main loop runs later with events enabled.
 */
#ifndef WORK_H
#define WORK_H

#include "compiler.h"

struct work {
    void (*fn)(void *data);
    void *data;
    volatile bool pending;
    struct work *next;
};

/* Register w (once); fn(data) will run after each work_raise(w). */
void work_init(struct work *w, void (*fn)(void *data), void *data);

/* Upcall-safe: mark w to run. */
void work_raise(struct work *w);

/* Is anything raised? */
bool work_pending(void);

/* Run everything raised (events enabled); returns whether anything ran. */
bool work_run(void);

/*
 * console_getc() for an interactive main loop: while no input is waiting,
 * run raised work, else block until an event arrives.
 */
int console_getc_or_work(void);

#endif /* WORK_H */
