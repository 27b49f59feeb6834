/*
 * Frame numbers and addresses.  A PV guest sees three kinds of frame:
 * virtual (VA), pseudo-physical (PFN) and machine (MFN).  At boot VA 0 is
 * PFN 0 and the mapping is 1:1 up to the end of the bootstrap area.
 */
#ifndef MM_H
#define MM_H

#include "compiler.h"
#include "setup.h"
#include "xen-abi.h"

/* NULL until map_shared_info() has run. */
extern struct shared_info *shared_info;

/* The read-only machine-to-physical table Xen maps for every PV guest. */
static inline unsigned long mfn_to_pfn(unsigned long mfn)
{
    return ((const volatile uint32_t *)MACH2PHYS_VIRT_START)[mfn];
}

/* start_info->mfn_list is the physical-to-machine table. */
static inline unsigned long pfn_to_mfn(unsigned long pfn)
{
    return ((const uint32_t *)start_info->mfn_list)[pfn];
}

/* Valid only inside the initial 1:1 mapping. */
static inline void *pfn_to_virt(unsigned long pfn)
{
    return (void *)(pfn << PAGE_SHIFT);
}

static inline unsigned long virt_to_pfn(const void *va)
{
    return (unsigned long)va >> PAGE_SHIFT;
}

static inline unsigned long virt_to_mfn(const void *va)
{
    return pfn_to_mfn(virt_to_pfn(va));
}

/* Map the shared_info frame (a machine address in start_info). */
void map_shared_info(void);

#endif /* MM_H */
