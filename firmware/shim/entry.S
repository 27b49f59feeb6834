/*
 * Guest entry and exit: the only shim code mapped in a guest's address
 * space (section .entry, read-only, in the hypervisor hole).
 *
 * On any interrupt or exception from ring 1/3 the CPU switches to this
 * vCPU's entry stack (TSS.esp0, guest-writable) and pushes its frame; we
 * complete Xen's cpu_user_regs there, switch to the shim's own address
 * space and private stack, and let C copy the frame before trusting it.
 * The way out loads the guest's CR3 while still on the entry stack.
 */
#include "shim_abi.h"

#define HAS_ERRCODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || \
                        (v) == 13 || (v) == 14 || (v) == 17 || (v) == 21 || \
                        (v) == 29 || (v) == 30)

        .section .entry, "ax"
        .code32

/* 256 stubs of 16 bytes each: entry_stubs + vector * 16. */
        .globl  entry_stubs
        .balign 16
entry_stubs:
        .set    vec, 0
        .rept   256
        .balign 16
        .if     (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
        .else
        pushl   $0
        .endif
        movw    $vec, 2(%esp)
        jmp     common_entry
        .set    vec, vec + 1
        .endr

/*
 * int $0x82: the hypercall fast path.  Post the request in the mailbox at
 * the bottom of this entry-stack page, ring the doorbell unless Python is
 * polling, spin for the answer, and if Python asks for nothing more (no
 * action, no upcall due) check the frame and return -- all without leaving
 * the guest's address space, so no TLB or translation cache is flushed.
 * Anything else continues in C in the shim's own address space.
 */
        .globl  hypercall_entry
        .balign 16
hypercall_entry:
        pushl   $0
        movw    $SHIM_VEC_HYPERCALL, 2(%esp)
        testb   $3, 8(%esp)
        jz      from_ring0
        pushl   %eax
        pushl   %ebp
        pushl   %edi
        pushl   %esi
        pushl   %edx
        pushl   %ecx
        pushl   %ebx
        movl    %es, %eax
        movl    %eax, 52(%esp)
        movl    %ds, %eax
        movl    %eax, 56(%esp)
        movl    %fs, %eax
        movl    %eax, 60(%esp)
        movl    %gs, %eax
        movl    %eax, 64(%esp)
        movl    $SHIM_HYP_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        cld
        cmpl    $SHIM_HYPERCALL_IRET, 24(%esp)
        jne     6f
        movl    %esp, %eax              /* iret: the shim's own, unposted */
        call    gv_iret                 /* fastpath.c, in this address space */
        testl   %eax, %eax
        jz      gv_exit
        cmpl    $2, %eax
        je      resume_c
        pushl   $2                      /* C does it in the shim's space */
        jmp     hypercall_slow
6:      movl    %esp, %ebx
        andl    $~0xfff, %ebx           /* the mailbox: bottom of this page */
        movl    $SHIM_REQ_HYPERCALL, 4(%ebx)
        rdtsc
        movl    %eax, 44(%ebx)          /* req_tsc_lo */
        movl    %edx, 48(%ebx)          /* req_tsc_hi */
        movl    0(%ebx), %esi
        incl    %esi                    /* the request's sequence number */
        movl    %esi, 0(%ebx)
        lock; orl $0, (%esp)            /* order req_seq before host_polling */
        xorl    %edi, %edi              /* edi: 1 = the doorbell was rung */
        cmpl    $0, 16(%ebx)
        jne     1f
        call    fast_doorbell
        movl    $1, %edi
1:      movl    shim_fast + 12, %ecx    /* spin_loops */
2:      cmpl    %esi, 8(%ebx)           /* resp_seq */
        je      3f
        pause
        decl    %ecx
        jnz     2b
        testl   %edi, %edi              /* skipped the doorbell: ring it now */
        jnz     4f
        call    fast_doorbell
4:      pushl   $1                      /* still unanswered */
        jmp     hypercall_slow
3:      movl    12(%ebx), %eax          /* resp_action */
        testl   %eax, %eax
        jz      9f
        cmpl    $(1 << 10), %eax        /* SHIM_ACT_EVENTS alone: an upcall is due */
        jne     5f
        movl    %esp, %eax
        call    gv_upcall               /* fastpath.c: bounce it from here */
        testl   %eax, %eax
        jnz     5f
        jmp     gv_exit
9:      movl    36(%esp), %eax          /* CS: ring 1 or 3 */
        testl   $3, %eax
        jz      5f
        movl    48(%esp), %edx          /* SS RPL must match */
        xorl    %eax, %edx
        testl   $3, %edx
        jnz     5f
        movl    40(%esp), %eax          /* EFLAGS: IOPL 0, no VM/NT; IF set */
        andl    $~0x00027000, %eax      /* IOPL, NT, VM */
        orl     $0x202, %eax
        movl    %eax, 40(%esp)
        jmp     exit_fault_start
5:      pushl   $0                      /* answered, with work for C */
hypercall_slow:
        leal    4(%esp), %ebx           /* the frame */
        popl    %edi
        movl    %ebx, %eax
        subl    $SHIM_ESTACK_BASE, %eax
        shrl    $13, %eax
        shll    $4, %eax
        addl    $shim_pcpu, %eax
        movl    8(%eax), %ecx
        movl    %ecx, %cr3              /* shim address space */
        movl    0(%eax), %esp           /* private stack */
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        pushl   %edi
        pushl   %ebx
        call    shim_hypercall_slow     /* does not return */
        ud2

/* Ring the doorbell from either address space (clobbers eax, edx). */
fast_doorbell:
        movl    shim_fast + 0, %eax
        cmpl    $SHIM_DOORBELL_IVSHMEM, %eax
        jne     1f
        movl    %ebx, %edx                  /* vector = vCPU id (from the mailbox) */
        subl    $SHIM_ESTACK_BASE, %edx
        shrl    $13, %edx
        movl    shim_fast + 4, %eax
        orl     %edx, %eax
        movl    %eax, SHIM_DOORBELL_VA + 12
        ret
1:      cmpl    $SHIM_DOORBELL_PORT, %eax
        jne     2f
        movl    shim_fast + 8, %edx
        xorl    %eax, %eax
        outb    %al, %dx
2:      ret

common_entry:
        testb   $3, 8(%esp)             /* CS of the interrupted context */
        jz      from_ring0
        pushl   %eax
        pushl   %ebp
        pushl   %edi
        pushl   %esi
        pushl   %edx
        pushl   %ecx
        pushl   %ebx
        movl    %es, %eax
        movl    %eax, 52(%esp)
        movl    %ds, %eax
        movl    %eax, 56(%esp)
        movl    %fs, %eax
        movl    %eax, 60(%esp)
        movl    %gs, %eax
        movl    %eax, 64(%esp)
        movl    $SHIM_HYP_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        cld
        cmpw    $13, 30(%esp)           /* entry_vector: #GP or #PF? */
        je      7f
        cmpw    $14, 30(%esp)
        jne     8f
7:      movl    %esp, %eax
        call    gv_trap                 /* fastpath.c, in this address space */
        testl   %eax, %eax
        jz      gv_exit
        cmpl    $2, %eax
        je      resume_c
8:      movl    %esp, %ebx              /* the frame, on the entry stack */
        movl    %esp, %eax
        subl    $SHIM_ESTACK_BASE, %eax
        shrl    $13, %eax               /* SHIM_ESTACK_STRIDE */
        shll    $4, %eax                /* sizeof(struct shim_pcpu) */
        addl    $shim_pcpu, %eax
        movl    8(%eax), %ecx
        movl    %ecx, %cr3              /* shim address space */
        movl    0(%eax), %esp           /* private stack */
        pushl   %ebx
        call    shim_guest_entry        /* does not return */
        ud2

/* A guest-view fast path finished: check the frame as leave_to_guest
 * does and return, still in the guest's address space. */
gv_exit:
        movl    36(%esp), %eax          /* CS: ring 1 or 3 */
        testl   $3, %eax
        jz      resume_c
        movl    48(%esp), %edx          /* SS RPL must match */
        xorl    %eax, %edx
        testl   $3, %edx
        jnz     resume_c
        movl    40(%esp), %eax          /* EFLAGS: IOPL 0, no VM/NT; IF set */
        andl    $~0x00027000, %eax
        orl     $0x202, %eax
        movl    %eax, 40(%esp)
        jmp     exit_fault_start

/* The frame is final but the exit needs C (an upcall, parking, a frame to
 * refuse): leave_to_guest in the shim's address space. */
resume_c:
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        movl    %esp, %ebx
        movl    %esp, %eax
        subl    $SHIM_ESTACK_BASE, %eax
        shrl    $13, %eax
        shll    $4, %eax
        addl    $shim_pcpu, %eax
        movl    8(%eax), %ecx
        movl    %ecx, %cr3
        movl    0(%eax), %esp
        pushl   %ebx
        call    shim_resume             /* does not return */
        ud2

/* Ring-0 accesses to guest memory for fastpath.c (regparm): a fault in
 * one resumes at its *_fault label (from_ring0) and reports failure. */
        .globl  gv_load, gv_store
gv_load:                                /* eax = va -> edx:eax = fault:value */
        xorl    %edx, %edx
gv_load_insn:
        movl    (%eax), %eax
        ret
gv_load_fault:
        movl    $1, %edx
        ret
gv_store:                               /* eax = va, edx = value -> eax = fault */
        movl    %edx, %ecx
gv_store_insn:
        movl    %ecx, (%eax)
        xorl    %eax, %eax
        ret
gv_store_fault:
        movl    $1, %eax
        ret

/* Interrupted ring 0: a fastpath.c access to guest memory, the shim itself
 * (a wake-up during hlt) or a fault on the way out to the guest (a bad
 * selector, a bad iret frame). */
from_ring0:
        cmpl    $gv_load_insn, 4(%esp)  /* the interrupted EIP */
        jne     1f
        movl    $gv_load_fault, 4(%esp)
        addl    $4, %esp
        iret
1:      cmpl    $gv_store_insn, 4(%esp)
        jne     2f
        movl    $gv_store_fault, 4(%esp)
        addl    $4, %esp
        iret
2:      pushl   %eax
        pushl   %ebp
        pushl   %edi
        pushl   %esi
        pushl   %edx
        pushl   %ecx
        pushl   %ebx
        movl    $SHIM_HYP_DS, %eax
        movl    %eax, %ds
        movl    %eax, %es
        cld
        movl    %esp, %ebx
        movl    shim_pcpu + 8, %eax
        movl    %eax, %cr3
        movl    %esp, %eax
        subl    $SHIM_ESTACK_BASE, %eax
        cmpl    $(SHIM_MAX_VCPUS * SHIM_ESTACK_STRIDE), %eax
        jae     1f
        shrl    $13, %eax               /* on an entry stack: go private */
        shll    $4, %eax
        movl    shim_pcpu(%eax), %esp
1:      pushl   %ebx
        call    shim_ring0_entry
        movl    %ebx, %esp
        popl    %ebx
        popl    %ecx
        popl    %edx
        popl    %esi
        popl    %edi
        popl    %ebp
        popl    %eax
        addl    $4, %esp
        iret

/* void shim_exit_to_guest(struct xen_regs *frame, uint32_t cr3)
 * frame is the staged frame at the top of this vCPU's entry stack. */
        .globl  shim_exit_to_guest, exit_fault_start, exit_fault_end
shim_exit_to_guest:
        movl    8(%esp), %eax
        movl    4(%esp), %esp
        movl    %eax, %cr3              /* guest address space */
exit_fault_start:
        movl    52(%esp), %eax
        movl    %eax, %es
        movl    56(%esp), %eax
        movl    %eax, %ds
        movl    60(%esp), %eax
        movl    %eax, %fs
        movl    64(%esp), %eax
        movl    %eax, %gs
        popl    %ebx
        popl    %ecx
        popl    %edx
        popl    %esi
        popl    %edi
        popl    %ebp
        popl    %eax
        addl    $4, %esp
        iret
exit_fault_end:

        .section .note.GNU-stack, "", @progbits
