/*
 * Start of day: xenguest_main() sets the library up and calls the
 * guest's main().
 */
#ifndef SETUP_H
#define SETUP_H

#include "compiler.h"
#include "xen-abi.h"

/* What Xen handed us in ESI; valid for the guest's whole life. */
extern start_info_t *start_info;

void __noreturn xenguest_main(start_info_t *si);

/*
 * Provided by each guest.  Returning 0 powers the domain off; anything
 * else crashes it.
 */
int main(void);

#endif /* SETUP_H */
