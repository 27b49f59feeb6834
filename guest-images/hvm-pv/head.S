/* hvm-pv start of day: the PVH entry, %ebx = hvm_start_info; and the
 * callback interrupt's entry stub. */
        .section .note.Xen, "a"
        .balign 4
        .long 4, 4, 18                  /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long _start

        .text
        .code32
        .globl _start
_start:
        cli
        cld
        movl    $stack_top, %esp
        pushl   %ebx
        call    guest_main
1:      cli
        hlt
        jmp     1b

        .globl callback_entry
callback_entry:
        pushal
        cld
        call    callback_handler
        popal
        iret

        .globl vector_entry
vector_entry:
        pushal
        cld
        call    vector_handler
        popal
        iret

        .bss
        .balign 16
        .skip 16384
stack_top:
        .section .note.GNU-stack, "", @progbits
