/*
 * shared_info: Xen gives us its machine address; we map it over one of
 * our own .bss pages with update_va_mapping.
 */
#include "console.h"
#include "hypercall.h"
#include "mm.h"
#include "sched.h"

static uint8_t shared_info_page[PAGE_SIZE] __aligned(PAGE_SIZE);

struct shared_info *shared_info;

void map_shared_info(void)
{
    uint64_t pte = (uint64_t)start_info->shared_info |
                   _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY;
    long rc;

    rc = hypercall_update_va_mapping((unsigned long)shared_info_page, pte,
                                     UVMF_INVLPG);
    if (rc) {
        early_printk("map_shared_info: update_va_mapping failed: %ld\n", rc);
        xen_shutdown_now(SHUTDOWN_crash);
    }
    shared_info = (struct shared_info *)shared_info_page;
}
