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
        orl     $0x80050023, %eax       /* PG | AM | WP | NE | MP | PE */
        andl    $~0x6000000c, %eax      /* caches on (CD, NW), TS, EM off */
        movl    %eax, %cr0
        jmp     3f
3:      call    shim_main
1:      hlt
        jmp     1b

/*
 * Secondary vCPUs: real mode at SHIM_AP_TRAMPOLINE after INIT-SIPI-SIPI
 * (CS = 0x0800).  Flat protected mode, the shim's address space, the
 * private stack of our APIC id, then ap_main(id).
 */
        .section .trampoline, "ax"
        .code16
        .globl  ap_trampoline
ap_trampoline:
        cli
        cld
        movw    %cs, %ax
        movw    %ax, %ds
        lgdtl   ap_gdt_desc - ap_trampoline
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $ap_pm32
        .code32
ap_pm32:
        movl    $0x10, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $shim_boot, %ebx
        movl    $0x10, %eax
        testl   $SHIM_BOOT_PAE, 8(%ebx)
        jz      1f
        orl     $0x20, %eax
1:      movl    %eax, %cr4
        movl    12(%ebx), %eax
        movl    %eax, %cr3
        movl    %cr0, %eax
        orl     $0x80050023, %eax
        andl    $~0x6000000c, %eax
        movl    %eax, %cr0
        jmp     2f
2:      movl    0xfee00020, %eax        /* local APIC id = vCPU id */
        shrl    $24, %eax
        movl    SHIM_BOOT_PSTACK_OFF(%ebx, %eax, 4), %esp
        pushl   %eax
        call    ap_main
3:      hlt
        jmp     3b
        .balign 8
ap_gdt: .quad   0
        .quad   0x00cf9b000000ffff
        .quad   0x00cf93000000ffff
ap_gdt_desc:
        .word   ap_gdt_desc - ap_gdt - 1
        .long   ap_gdt

        .section .bss
        .balign 8192                    /* bottom word: no vCPU (this_vcpu) */
boot_stack:
        .skip   8192
boot_stack_top:
        .section .note.GNU-stack, "", @progbits
