/*
 * The reset ROM (QEMU -bios, 64 KiB at the top of 4 GiB): real mode ->
 * flat 32-bit protected mode -> the shim's _start, which Python already
 * placed in RAM.  No BIOS services: nothing else runs in the VM.
 */
#define SHIM_ENTRY 0x10000

        .code16
        .text
        .globl rom_start
rom_start:
        .balign 16
gdt:    .quad 0
        .quad 0x00cf9b000000ffff        /* 0x08 flat code, accessed preset */
        .quad 0x00cf93000000ffff        /* 0x10 flat data, accessed preset */
gdt_desc:
        .word gdt_desc - gdt - 1
        .long 0xffff0000 + gdt

rm_entry:
        cli
        cld
        lgdtl   %cs:gdt_desc
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $0x08, $(0xffff0000 + pm_entry)

        .code32
pm_entry:
        movl    $0x10, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $SHIM_ENTRY, %eax
        jmp     *%eax

        .code16
        .org    0xfff0
reset_vector:
        jmp     rm_entry
        .org    0x10000
