/*
 * Entry point and the hypercall page.
 *
 * Xen starts us (xen.h "start of day") in ring 1 with CS = FLAT_KERNEL_CS,
 * the data segments = FLAT_KERNEL_DS, events masked, ESI = virtual address
 * of start_info and ESP = the top of a boot stack the domain builder made.
 * We move to our own stack in .bss and hand start_info to C.
 */
#include "xen-abi.h"

#define STACK_SIZE      (16 * 1024)

/*
 * The page Xen fills with 32-byte hypercall stubs (ELF note HYPERCALL_PAGE).
 * The linker script puts it first in .text, so it is page aligned at no
 * cost in padding.
 */
        .section .text.hypercall_page, "ax", @progbits
        .balign 4096
        .globl hypercall_page
        .type hypercall_page, @object
hypercall_page:
        .fill 4096, 1, 0
        .size hypercall_page, . - hypercall_page

        .section .text.head, "ax", @progbits
        .globl _start
        .type _start, @function
_start:
        cld

        /* .bss is already zero: Xen's ELF loader (libelf) fills p_memsz
         * beyond p_filesz with zeroes, and so does qemu-xenpv's builder.
         * (Clearing our 1 MiB of ring buffers again cost 5 ms under TCG.) */

        mov     $stack_top, %esp
        xor     %ebp, %ebp              /* terminates frame-pointer walks */

        /*
         * Xen must have written the stubs; without them we cannot even
         * print.  ud2 with no trap table makes Xen crash the domain.
         */
        cmpb    $0, hypercall_page
        jne     1f
        ud2
1:
        push    %esi                    /* start_info_t *si */
        call    xenguest_main           /* does not return */
        ud2
        .size _start, . - _start

        .bss
        .balign 4096
        .globl stack, stack_top
stack:
        .skip STACK_SIZE
stack_top:
