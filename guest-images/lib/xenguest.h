/*
 * Everything a guest of this library includes.
 */
#ifndef XENGUEST_H
#define XENGUEST_H

#include "clock.h"
#include "compiler.h"
#include "console.h"
#include "events.h"
#include "hypercall.h"
#include "mm.h"
#include "printf.h"
#include "sched.h"
#include "setup.h"
#include "string.h"
#include "traps.h"
#include "xen-abi.h"

#endif /* XENGUEST_H */
