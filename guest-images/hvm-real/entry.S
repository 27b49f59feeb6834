/*
 * hvm-real: started by hvmloader in 16-bit real mode at 0000:7C00 (the
 * start vmxassist gave its guests; QEMU runs real mode natively).  Checks
 * that it is in real mode, prints through the 16550 with real-mode code,
 * enters protected mode itself and hands over to main() (32-bit C).
 */
        .section .text16, "ax"
        .code16
        .globl _start
_start:
        cli
        cld
        movw    %cs, %bx                /* CS as entered, for the report */
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        movw    %bx, rm_cs
        movw    %dx, rm_dx
        smsw    %ax
        movw    %ax, rm_msw
        movw    $msg16, %si
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc16
        jmp     1b
2:      lgdtl   gdt_desc
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $pm32

putc16:
        movb    %al, %ah
        movw    $0x3fd, %dx
3:      inb     %dx, %al
        testb   $0x20, %al
        jz      3b
        movw    $0x3f8, %dx
        movb    %ah, %al
        outb    %al, %dx
        ret

msg16:  .asciz "hvm-real: hello from 16-bit real mode\r\n"

        .balign 8
gdt:    .quad 0
        .quad 0x00cf9b000000ffff        /* 0x08 flat code */
        .quad 0x00cf93000000ffff        /* 0x10 flat data */
gdt_desc:
        .word 23
        .long gdt

        .globl rm_cs, rm_dx, rm_msw
rm_cs:  .word 0
rm_dx:  .word 0
rm_msw: .word 0

        .code32
pm32:
        movl    $0x10, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $0x7c00, %esp
        call    main
4:      cli
        hlt
        jmp     4b

        .section .note.GNU-stack, "", @progbits
