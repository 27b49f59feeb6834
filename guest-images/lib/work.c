/*
 * Deferred work (see work.h).  Uniprocessor: the only concurrency is an
 * upcall interrupting the main loop, so a flag per item is enough.
 */
#include "console.h"
#include "events.h"
#include "sched.h"
#include "work.h"

static struct work *works;
static volatile bool any_pending;

void work_init(struct work *w, void (*fn)(void *data), void *data)
{
    struct work *p;
    unsigned long flags = local_irq_save();

    w->fn = fn;
    w->data = data;
    w->pending = false;
    for (p = works; p; p = p->next)
        if (p == w)
            break;
    if (!p) {
        w->next = works;
        works = w;
    }
    local_irq_restore(flags);
}

void work_raise(struct work *w)
{
    WRITE_ONCE(w->pending, true);
    WRITE_ONCE(any_pending, true);
}

bool work_pending(void)
{
    return READ_ONCE(any_pending);
}

bool work_run(void)
{
    bool ran = false;
    struct work *w;

    while (READ_ONCE(any_pending)) {
        WRITE_ONCE(any_pending, false);
        barrier();
        for (w = works; w; w = w->next) {
            if (READ_ONCE(w->pending)) {
                WRITE_ONCE(w->pending, false);
                barrier();
                w->fn(w->data);
                ran = true;
            }
        }
    }
    return ran;
}

int console_getc_or_work(void)
{
    unsigned long flags = local_irq_save();
    int c;

    /* As console_getc(): check with events masked, block() unmasks. */
    while ((c = console_getc_nowait()) < 0) {
        if (work_pending()) {
            local_irq_restore(flags);
            work_run();
            flags = local_irq_save();
            continue;
        }
        block();
        local_irq_disable();
    }
    local_irq_restore(flags);
    return c;
}
