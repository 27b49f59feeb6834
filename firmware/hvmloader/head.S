/*
 * hvmloader start of day.  The whole loader is one 128 KiB image given to
 * QEMU as -bios: the reset vector at 0xFFFFFFF0 switches to flat 32-bit
 * protected mode, copies the loader from the ROM to its link address in
 * RAM (HVM_LOADER_BASE), clears its bss and calls main() there.  Also
 * here: the four ways into the guest (Linux 32-bit, PVH, Multiboot, real
 * mode).
 */
#include "hvm_info.h"

#define SEL_CODE32      0x10
#define SEL_DATA32      0x18
#define SEL_CODE16      0x20
#define SEL_DATA16      0x28
#define SEL_TSS         0x30

#define MULTIBOOT_BOOTLOADER_MAGIC      0x2badb002

/* ---- the last 8 KiB of the ROM: 16-bit reset code and the ROM GDT ---- */
        .section .rom32, "ax"
        .code16
rom_gdt:
        .quad 0
        .quad 0
        .quad 0x00cf9b000000ffff        /* 0x10 flat code, accessed preset */
        .quad 0x00cf93000000ffff        /* 0x18 flat data, accessed preset */
rom_gdt_desc:
        .word rom_gdt_desc - rom_gdt - 1
        .long rom_gdt

        .globl rm_entry
rm_entry:
        cli
        cld
        /* CS base is 0xFFFF0000 after reset: address the ROM GDT through it */
        lgdtl   %cs:(0xe000 + rom_gdt_desc - rom_gdt)   /* .rom32 is at 0xFFFFE000 */
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmpl   $SEL_CODE32, $pm_entry

        .code32
pm_entry:
        movl    $SEL_DATA32, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        /* copy the loader image to RAM, clear its bss */
        movl    $__image_lma, %esi
        movl    $__image_start, %edi
        movl    $__image_dwords, %ecx
        rep movsl
        movl    $__bss_start, %edi
        movl    $__bss_dwords, %ecx
        xorl    %eax, %eax
        rep stosl
        movl    $HVM_LOADER_LIMIT, %esp
        ljmpl   $SEL_CODE32, $start32

        .section .reset, "ax"
        .code16
reset_vector:
        jmp     rm_entry
        .balign 16, 0xff

/* ---- in RAM from here on ---- */
        .section .text.start, "ax"
        .code32
        .globl start32
start32:
        lgdt    gdt_desc
        ljmpl   $SEL_CODE32, $1f
1:      movl    $SEL_DATA32, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $HVM_LOADER_LIMIT, %esp
        xorl    %ebp, %ebp
        call    main
2:      cli
        hlt
        jmp     2b

/* enter_linux(entry, boot_params): the 32-bit boot protocol wants CS
 * __BOOT_CS (0x10), DS/ES/SS __BOOT_DS (0x18), interrupts off,
 * %esi = boot_params, %ebx = %edi = %ebp = 0.                          */
        .globl enter_linux
enter_linux:
        cli
        movl    4(%esp), %eax
        movl    8(%esp), %esi
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %edi, %edi
        xorl    %ebp, %ebp
        jmp     *%eax

/* enter_pvh(entry, start_info): docs/misc/pvh.pandoc: %ebx = start_info,
 * CR0.PE only, CR4 0, flat CS/DS/ES/SS, TR a 32-bit TSS (base 0, limit
 * 0x67), EFLAGS.IF/TF/VM clear.                                        */
        .globl enter_pvh
enter_pvh:
        cli
        movl    4(%esp), %eax
        movl    8(%esp), %ebx
        movw    $SEL_TSS, %cx
        ltr     %cx
        movl    $0x00000011, %ecx       /* PE (ET reads as 1 anyway) */
        movl    %ecx, %cr0
        xorl    %ecx, %ecx
        movl    %ecx, %cr4
        xorl    %edx, %edx
        xorl    %esi, %esi
        xorl    %edi, %edi
        xorl    %ebp, %ebp
        pushl   $0x2
        popfl
        jmp     *%eax

/* enter_multiboot(entry, multiboot_info): the Multiboot 0.6.96 machine
 * state (3.2): %eax = 0x2BADB002, %ebx = multiboot_info, CS flat 32-bit
 * read/execute, DS/ES/FS/GS/SS flat 32-bit read/write, A20 on, CR0.PG
 * clear and CR0.PE set, EFLAGS.VM and IF clear (all of EFLAGS but the
 * reserved bit 1).  The GDT stays the loader's, in RAM the guest owns
 * from now on: the specification lets it be invalid.                    */
        .globl enter_multiboot
enter_multiboot:
        cli
        movl    4(%esp), %ecx
        movl    8(%esp), %ebx
        inb     $0x92, %al                      /* fast A20 gate on, no reset */
        orb     $0x02, %al
        andb    $0xfe, %al
        outb    %al, $0x92
        movl    %cr0, %eax
        andl    $0x7fffffff, %eax               /* PG off */
        orl     $0x00000001, %eax               /* PE on  */
        movl    %eax, %cr0
        ljmpl   $SEL_CODE32, $1f
1:      movl    $SEL_DATA32, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %fs
        movl    %eax, %gs
        movl    %eax, %ss
        pushl   $0x2
        popfl
        movl    $MULTIBOOT_BOOTLOADER_MAGIC, %eax
        xorl    %edx, %edx
        xorl    %esi, %esi
        xorl    %edi, %edi
        xorl    %ebp, %ebp
        jmp     *%ecx

/* enter_realmode(cs << 16 | ip): back to real mode (as vmxassist handed
 * its guests a real-mode start): 16-bit protected mode, PE off, then a
 * far jump to CS:IP with DS = ES = SS = 0, SP = 0x7C00, DL = 0x80 and
 * the real-mode IVT at 0 (no BIOS services behind it).                 */
        .globl enter_realmode
enter_realmode:
        cli
        movl    4(%esp), %eax
        movw    %ax, rm_target                  /* IP */
        shrl    $16, %eax
        movw    %ax, rm_target + 2              /* CS */
        lidt    rm_idt_desc
        ljmpl   $SEL_CODE16, $(tramp16 - start32)     /* start32 is at HVM_LOADER_BASE */

        .code16
tramp16:
        movw    $SEL_DATA16, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        movw    %ax, %ss
        movl    %cr0, %eax
        andl    $~0x80000001, %eax
        movl    %eax, %cr0
        ljmp    $(HVM_LOADER_BASE >> 4), $(rm16 - start32)
rm16:
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        movw    %ax, %ss
        movw    $0x7c00, %sp
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        xorl    %esi, %esi
        xorl    %edi, %edi
        xorl    %ebp, %ebp
        movl    $0x80, %edx
        xorl    %eax, %eax
        ljmp    *%cs:(rm_target - start32)
rm_target:
        .word 0, 0

        .code32
        .section .data
        .balign 16
gdt:
        .quad 0
        .quad 0
        .quad 0x00cf9b000000ffff        /* 0x10 __BOOT_CS: flat 32-bit code */
        .quad 0x00cf93000000ffff        /* 0x18 __BOOT_DS: flat 32-bit data */
        .quad 0x00009b010000ffff        /* 0x20 16-bit code, base HVM_LOADER_BASE */
        .quad 0x000093000000ffff        /* 0x28 16-bit data, base 0 */
        .quad 0x0000890000000067        /* 0x30 32-bit TSS, base 0, limit 0x67 (PVH) */
gdt_end:
        .balign 4
        .word 0
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt
        .word 0
rm_idt_desc:
        .word 0x3ff
        .long 0

        .section .rodata
        .balign 16
        .globl dsdt_aml, dsdt_aml_end
dsdt_aml:
        .incbin DSDT_AML
dsdt_aml_end:

        .section .note.GNU-stack, "", @progbits
