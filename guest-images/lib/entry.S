/*
 * Exception and event entry points.
 *
 * Xen bounces an exception to a ring-1 handler with this frame on the
 * ring-1 stack (lowest address first):
 *     [error code]  only for vectors 8, 10-14 and 17
 *     EIP
 *     CS            bits 16-23 hold the saved event-upcall mask
 *     EFLAGS        IF = !saved upcall mask
 *     [ESP, SS]     only when the interrupted code ran in ring 3
 * The event callback gets the same frame without an error code.
 *
 * Every stub pads the frame to the same shape (struct cpu_regs in
 * traps.h: 7 registers, vector, error code, then Xen's part), calls C
 * with a pointer to it, restores every register and returns with the
 * iret hypercall.  That stub pushes %eax itself, so the hypercall sees
 * [EAX, EIP, CS, EFLAGS(, ESP, SS)] and Xen restores EAX, the return
 * context and the event mask (from EFLAGS.IF) in one step.
 */
#include "xen-abi.h"
#include "traps.h"

#define HYPERCALL_iret  (hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE)

        .text

/* Push the general registers in struct cpu_regs order (ebx lowest). */
.macro SAVE_ALL
        push    %eax
        push    %ebp
        push    %edi
        push    %esi
        push    %edx
        push    %ecx
        push    %ebx
.endm

.macro exception_stub name, vector, has_error_code=0
        .globl entry_\name
        .type entry_\name, @function
entry_\name:
        .if !\has_error_code
        push    $0                      /* dummy error code */
        .endif
        push    $\vector
        jmp     exception_common
        .size entry_\name, . - entry_\name
.endm

        exception_stub DE,   0
        exception_stub DB,   1
        exception_stub NMI,  2
        exception_stub BP,   3
        exception_stub OF,   4
        exception_stub BR,   5
        exception_stub UD,   6
        exception_stub NM,   7
        exception_stub DF,   8, 1
        exception_stub CSO,  9
        exception_stub TS,  10, 1
        exception_stub NP,  11, 1
        exception_stub SS,  12, 1
        exception_stub GP,  13, 1
        exception_stub PF,  14, 1
        exception_stub SPV, 15
        exception_stub MF,  16
        exception_stub AC,  17, 1
        exception_stub MC,  18
        exception_stub XM,  19

        .type exception_common, @function
exception_common:
        SAVE_ALL
        mov     %esp, %eax
        push    %eax                    /* struct cpu_regs *regs */
        call    do_exception
        add     $4, %esp
        jmp     return_via_iret
        .size exception_common, . - exception_common

/* Event upcall (CALLBACKTYPE_event); Xen has masked events for us. */
        .globl hypervisor_callback
        .type hypervisor_callback, @function
hypervisor_callback:
        push    $0                      /* error code */
        push    $VECTOR_EVENT_UPCALL
        SAVE_ALL
        mov     %esp, %eax
        push    %eax
        call    do_event_upcall
        add     $4, %esp
        jmp     return_via_iret
        .size hypervisor_callback, . - hypervisor_callback

/*
 * Restore the registers of a struct cpu_regs at %esp, drop vector and
 * error code, and let Xen return to EIP/CS/EFLAGS.  Anything that happens
 * between the pops and the hypercall (an upcall) only uses stack below
 * %esp, so the frame stays intact.
 */
        .globl return_via_iret
        .type return_via_iret, @function
return_via_iret:
        pop     %ebx
        pop     %ecx
        pop     %edx
        pop     %esi
        pop     %edi
        pop     %ebp
        pop     %eax
        add     $8, %esp                /* vector, error code */
        jmp     HYPERCALL_iret
        .size return_via_iret, . - return_via_iret

/*
 * Failsafe callback: Xen could not load the segment registers of a
 * context it returned to.  Frame: DS, ES, FS, GS, EIP, CS, EFLAGS(, ESP,
 * SS).  Our segments never change, so this is fatal.
 */
        .globl failsafe_callback
        .type failsafe_callback, @function
failsafe_callback:
        mov     %esp, %eax
        push    %eax                    /* uint32_t *frame */
        call    do_failsafe             /* does not return */
        ud2
        .size failsafe_callback, . - failsafe_callback

/* Entry points for traps.c, indexed by vector. */
        .section .rodata
        .balign 4
        .globl exception_entry_points
exception_entry_points:
        .long entry_DE, entry_DB, entry_NMI, entry_BP, entry_OF
        .long entry_BR, entry_UD, entry_NM, entry_DF, entry_CSO
        .long entry_TS, entry_NP, entry_SS, entry_GP, entry_PF
        .long entry_SPV, entry_MF, entry_AC, entry_MC, entry_XM
        .size exception_entry_points, . - exception_entry_points
