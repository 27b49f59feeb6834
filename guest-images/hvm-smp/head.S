/*
 * hvm-smp start of day: the PVH entry (XEN_ELFNOTE_PHYS32_ENTRY), flat
 * 32-bit protected mode, paging off, %ebx = hvm_start_info.  Also the AP
 * trampoline: 16-bit code that main.c copies to TRAMP_BASE (a page below
 * 1 MiB, SIPI vector TRAMP_BASE >> 12); each AP takes a stack and calls
 * ap_main(index).
 */
#define TRAMP_BASE      0x8000
#define STACK_SIZE      4096

        .section .note.Xen, "a"
        .balign 4
        .long 4, 4, 18                  /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long _start

        .text
        .code32
        .globl _start
_start:
        cli
        cld
        movl    $bsp_stack_top, %esp
        pushl   %ebx                    /* hvm_start_info */
        call    bsp_main
1:      cli
        hlt
        jmp     1b

/* ---- the AP trampoline: position-independent in its 16-bit part ---- */
        .globl tramp_start, tramp_end
        .code16
tramp_start:
        cli
        movw    %cs, %ax
        movw    %ax, %ds
        lgdtl   tramp_gdt_desc - tramp_start
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $(TRAMP_BASE + tramp32 - tramp_start)
        .code32
tramp32:
        movl    $0x10, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $1, %eax
        lock xaddl %eax, ap_next        /* this AP's index, from 1 */
        movl    %eax, %ecx
        incl    %ecx
        imull   $STACK_SIZE, %ecx
        leal    ap_stacks(%ecx), %esp
        pushl   %eax
        movl    $ap_main, %eax
        call    *%eax
2:      cli
        hlt
        jmp     2b
        .balign 8
tramp_gdt:
        .quad 0
        .quad 0x00cf9b000000ffff        /* 0x08 flat code */
        .quad 0x00cf93000000ffff        /* 0x10 flat data */
tramp_gdt_desc:
        .word 23
        .long TRAMP_BASE + tramp_gdt - tramp_start
tramp_end:

        .data
        .globl ap_next
        .balign 4
ap_next:
        .long 1

        .bss
        .balign 16
        .skip 16384
bsp_stack_top:
        .globl ap_stacks
        .balign 16
ap_stacks:
        .skip 4096 * 128                /* HVM_MAX_VCPUS stacks (index 1..127) */

        .section .note.GNU-stack, "", @progbits
