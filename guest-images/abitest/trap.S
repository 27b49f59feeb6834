/*
 * abitest's low-level pieces: trap stubs that can catch any exception
 * (setjmp/longjmp style), ring-3 execution through the iret hypercall,
 * a failsafe callback that records its frame, a test event callback and
 * an iret to ring 1 with a chosen frame.
 */
#include "xen-abi.h"
#include "xen-abi-ext.h"
#include "traps.h"

#define HYPERCALL_iret  (hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE)

/* struct catch_record (abitest.h) */
#define CR_VECTOR       0
#define CR_FRAME_ADDR   4
#define CR_CR2          8
#define CR_MASK         12
#define CR_FRAME        16

        .text

/* One stub per caught vector: push the vector, then the common path. */
.macro trap_stub vec
        .globl abt_stub_\vec
        .type abt_stub_\vec, @function
abt_stub_\vec:
        pushl   $\vec
        jmp     abt_trap_common
        .size abt_stub_\vec, . - abt_stub_\vec
.endm

        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,0x40,0x41,0x42,0x43
        trap_stub \v
        .endr

        .section .rodata
        .balign 4
        .globl abt_stubs
abt_stubs:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19
        .long abt_stub_\v
        .endr
        .text

/*
 * (%esp) = vector, above it Xen's bounce frame.  Not armed: hand the
 * untouched frame to the library's stub for the vector.  Armed: record the
 * frame, the fault address and the event mask, and return from
 * catch_call() with the vector.
 */
        .type abt_trap_common, @function
abt_trap_common:
        cmpl    $0, %ss:catch_armed
        jne     1f
        cmpl    $NR_EXCEPTIONS, (%esp)
        jae     2f
        xchgl   %eax, (%esp)
        movl    %ss:exception_entry_points(, %eax, 4), %eax
        xchgl   %eax, (%esp)
        ret                             /* to the library's stub */
2:      ud2                             /* a soft vector nobody expected */

1:      pushl   %eax
        pushl   %ecx
        pushl   %esi
        pushl   %edi
        movl    $FLAT_KERNEL_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        cld
        movl    16(%esp), %eax
        movl    %eax, catch_rec + CR_VECTOR
        leal    20(%esp), %esi
        movl    %esi, catch_rec + CR_FRAME_ADDR
        leal    catch_rec + CR_FRAME, %edi
        movl    $12, %ecx
        rep movsl
        movl    shared_info, %eax
        movl    8(%eax), %ecx           /* vcpu_info[0].arch.cr2 */
        movl    %ecx, catch_rec + CR_CR2
        movzbl  1(%eax), %ecx           /* evtchn_upcall_mask */
        movl    %ecx, catch_rec + CR_MASK
        movl    $0, catch_armed
        movl    catch_esp, %esp
        movl    catch_rec + CR_VECTOR, %eax
        popl    %edi
        popl    %esi
        popl    %ebx
        popl    %ebp
        ret
        .size abt_trap_common, . - abt_trap_common

/* long catch_call(void (*fn)(void *), void *arg) */
        .globl catch_call
        .type catch_call, @function
catch_call:
        pushl   %ebp
        pushl   %ebx
        pushl   %esi
        pushl   %edi
        movl    %esp, catch_esp
        movl    20(%esp), %ecx          /* fn */
        movl    24(%esp), %eax          /* arg */
        movl    $1, catch_armed
        pushl   %eax
        call    *%ecx
        addl    $4, %esp
        movl    $0, catch_armed
        movl    $-1, %eax
        popl    %edi
        popl    %esi
        popl    %ebx
        popl    %ebp
        ret
        .size catch_call, . - catch_call

/*
 * unsigned long exec_user(fn, arg): iret (hypercall) to ring 3 at
 * user_entry with ESP = user_stack_top; user_entry calls fn(arg) and
 * comes back with int $0x20 (a DPL-3 trap entry), to abt_ret2kern.
 * The data segments are the ring-3 flat ones, usable in ring 1 too.
 */
        .globl exec_user
        .type exec_user, @function
exec_user:
        pushl   %ebp
        pushl   %ebx
        pushl   %esi
        pushl   %edi
        movl    %esp, user_saved_esp
        movl    20(%esp), %eax          /* fn: EAX of the iret frame */
        movl    24(%esp), %ecx          /* arg */
        movl    $FLAT_USER_DS, %edx
        movl    %edx, %ds
        movl    %edx, %es
        pushl   $FLAT_USER_SS
        pushl   $user_stack_top
        pushl   $0x202                  /* EFLAGS: IF */
        pushl   $FLAT_USER_CS
        pushl   $user_entry
        jmp     HYPERCALL_iret          /* pushes %eax itself */
        .size exec_user, . - exec_user

/* int $0x20 from ring 3: Xen's frame EIP CS EFLAGS ESP SS on kstack. */
        .globl abt_ret2kern
        .type abt_ret2kern, @function
abt_ret2kern:
        movl    $FLAT_KERNEL_DS, %ecx
        movl    %ecx, %ds
        movl    %ecx, %es
        movl    %esp, user_ret_frame_addr
        movl    0(%esp), %ecx
        movl    %ecx, user_ret_frame
        movl    4(%esp), %ecx
        movl    %ecx, user_ret_frame + 4
        movl    8(%esp), %ecx
        movl    %ecx, user_ret_frame + 8
        movl    12(%esp), %ecx
        movl    %ecx, user_ret_frame + 12
        movl    16(%esp), %ecx
        movl    %ecx, user_ret_frame + 16
        movl    user_saved_esp, %esp
        popl    %edi
        popl    %esi
        popl    %ebx
        popl    %ebp
        ret
        .size abt_ret2kern, . - abt_ret2kern

/*
 * The failsafe callback: DS ES FS GS EIP CS EFLAGS [ESP SS], entered with
 * null data segments.  Record, then resume with FS = GS = 0.
 */
        .globl abt_failsafe
        .type abt_failsafe, @function
abt_failsafe:
        pushl   %eax
        movl    $FLAT_KERNEL_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        pushl   %ecx
        pushl   %esi
        pushl   %edi
        cld
        leal    16(%esp), %esi
        leal    failsafe_frame, %edi
        movl    $9, %ecx
        rep movsl
        movl    shared_info, %eax
        movzbl  1(%eax), %ecx
        movl    %ecx, failsafe_mask
        incl    failsafe_count
        popl    %edi
        popl    %esi
        popl    %ecx
        popl    %eax
        addl    $16, %esp               /* DS ES FS GS */
        jmp     HYPERCALL_iret
        .size abt_failsafe, . - abt_failsafe

/* The test event callback: save everything, call C, iret. */
        .globl abt_evt_entry
        .type abt_evt_entry, @function
abt_evt_entry:
        pushl   %eax
        pushl   %ebp
        pushl   %edi
        pushl   %esi
        pushl   %edx
        pushl   %ecx
        pushl   %ebx
        movl    $FLAT_KERNEL_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        call    abt_evt_c
        popl    %ebx
        popl    %ecx
        popl    %edx
        popl    %esi
        popl    %edi
        popl    %ebp
        popl    %eax
        jmp     HYPERCALL_iret
        .size abt_evt_entry, . - abt_evt_entry

/* uint32_t iret_to_self(uint32_t eax, uint32_t eflags) */
        .globl iret_to_self
        .type iret_to_self, @function
iret_to_self:
        movl    4(%esp), %eax
        movl    8(%esp), %ecx
        pushl   %ecx                    /* EFLAGS */
        pushl   $FLAT_KERNEL_CS
        pushl   $1f
        jmp     HYPERCALL_iret
1:      ret
        .size iret_to_self, . - iret_to_self

/* ---- ring 3: its code lives on its own pages, mapped with _PAGE_USER ---- */
        .section .text.user, "ax", @progbits
        .balign 4096
        .globl user_text_start
user_text_start:
user_entry:
        pushl   %ecx
        call    *%eax
        addl    $4, %esp
        int     $0x20
        ud2

.macro user_fn name
        .globl \name
        .type \name, @function
\name:
.endm

user_fn u_read_cs
        movl    %cs, %eax
        ret
user_fn u_get_esp
        movl    %esp, %eax
        ret
user_fn u_cli
        .globl u_cli_insn
u_cli_insn:
        cli
        ret
user_fn u_hypercall
        movl    $__HYPERVISOR_xen_version, %eax
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        .globl u_hypercall_insn
u_hypercall_insn:
        int     $0x82
        ret
user_fn u_int40
        .globl u_int40_insn
u_int40_insn:
        int     $0x40
        ret
user_fn u_int41
        int     $0x41
        .globl u_int41_end
u_int41_end:
        ret
user_fn u_int3
        int3
        .globl u_int3_end
u_int3_end:
        ret
user_fn u_read
        movl    4(%esp), %eax
        .globl u_read_insn
u_read_insn:
        movl    (%eax), %eax
        ret
user_fn u_inb80
        xorl    %eax, %eax
        .globl u_inb80_insn
u_inb80_insn:
        inb     $0x80, %al
        ret
user_fn u_mov_dr7
        .globl u_mov_dr7_insn
u_mov_dr7_insn:
        movl    %dr7, %eax
        ret

        .balign 4096
        .globl user_text_end
user_text_end:

/* ---- data ------------------------------------------------------------ */
        .bss
        .balign 4096
        .globl user_stack, user_stack_top
user_stack:
        .skip   4096
user_stack_top:
        .globl kstack, kstack_top
kstack:
        .skip   8192
kstack_top:
        .skip   4096                    /* catch_call copies words above a frame */

        .balign 4
        .globl catch_rec, catch_armed, catch_esp, fault_ip
catch_rec:      .skip   16 + 48
catch_armed:    .skip   4
catch_esp:      .skip   4
fault_ip:       .skip   4
        .globl user_saved_esp, user_ret_frame, user_ret_frame_addr
user_saved_esp: .skip   4
user_ret_frame: .skip   20
user_ret_frame_addr: .skip 4
        .globl failsafe_count, failsafe_mask, failsafe_frame
failsafe_count: .skip   4
failsafe_mask:  .skip   4
failsafe_frame: .skip   36

        .section .note.GNU-stack, "", @progbits
