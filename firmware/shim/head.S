/*
 * Shim start of day.  The reset ROM leaves us in flat 32-bit protected mode
 * with paging off at our link address.  Python has already built our
 * address space (shim_boot.cr3); turn paging on and enter C.
 */
#include "shim_abi.h"

        .section .text.start, "ax"
        .code32
        .globl _start
_start:
        cli
        cld
        movl    $boot_stack_top, %esp
        movl    $shim_boot, %ebx
        cmpl    $SHIM_BOOT_MAGIC, 0(%ebx)
        jne     1f
        movl    $SHIM_STATUS_STARTED, %eax
        movl    %eax, SHIM_BOOT_STATUS_OFF(%ebx)
        /* CR4: PSE always (non-PAE large pages), PAE if asked. */
        movl    $0x10, %eax
        testl   $SHIM_BOOT_PAE, 8(%ebx)
        jz      2f
        orl     $0x20, %eax
2:      movl    %eax, %cr4
        movl    12(%ebx), %eax
        movl    %eax, %cr3
        movl    %cr0, %eax
        orl     $0x80010001, %eax       /* PG | WP | PE */
        andl    $~0x6000000c, %eax      /* caches on (CD, NW), TS, EM off */
        movl    %eax, %cr0
        jmp     3f
3:      call    shim_main
1:      hlt
        jmp     1b

        .section .bss
        .balign 8192                    /* bottom word: no vCPU (this_vcpu) */
boot_stack:
        .skip   8192
boot_stack_top:
        .section .note.GNU-stack, "", @progbits
