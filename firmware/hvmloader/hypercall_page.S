/*
 * The hypercall area qemu-xenpv writes into an HVM domain (two pages of
 * code, position-independent; the builder puts them at the top of RAM in
 * E820-reserved memory, followed by two pages of per-vCPU mailboxes):
 *
 *   page 0  hypercall_page: entry n at n*32 is "mov $n, %eax; jmp common",
 *           called as on Xen (call hypercall_page + n*32, arguments in
 *           %ebx %ecx %edx %esi %edi %ebp, result in %eax, other registers
 *           preserved)
 *   page 1  common: with interrupts off, find this vCPU's mailbox (APIC id
 *           from CPUID.1, the mailboxes follow this page), store the
 *           registers, CR3/CR0/CR4 (Python walks the guest's page tables
 *           for pointer arguments), ring the doorbell with the APIC id as
 *           the byte, spin until Python answers.
 *
 * A guest maps the four pages virtually contiguous (the code needs only
 * read/execute, the mailboxes read/write).  Layout of a 64-byte mailbox:
 * 0 req_seq, 4 resp_seq, 8 eax (nr in, result out), 12 ebx, 16 ecx,
 * 20 edx, 24 esi, 28 edi, 32 ebp, 36 cr3, 40 cr0, 44 cr4, 48 apic id.
 * (qemu_xenpv/hvm/pv.py is the Python side.)
 */
#define DOORBELL_PORT   0x520
#define MBOX_SHIFT      6

        .text
        .code32
        .globl hypercall_page
hypercall_page:
        .set nr, 0
        .rept 128
        .balign 32, 0xcc
        movl    $nr, %eax
        jmp     common
        .set nr, nr + 1
        .endr

        .balign 4096, 0xcc
common:
        pushfl
        cli
        pushl   %ebp
        pushl   %edi
        pushl   %esi
        pushl   %edx
        pushl   %ecx
        pushl   %ebx
        pushl   %eax                    /* 0(%esp) nr, 4 ebx ... 24 ebp, 28 eflags */
        movl    $1, %eax
        cpuid
        shrl    $24, %ebx               /* initial APIC id */
        andl    $0x7f, %ebx             /* HVM_MAX_VCPUS mailboxes */
        call    1f
1:      popl    %esi
        andl    $~0xfff, %esi
        addl    $0x1000, %esi           /* the mailbox pages follow this one */
        movl    %ebx, %ecx
        shll    $MBOX_SHIFT, %ecx
        addl    %ecx, %esi              /* %esi = this vCPU's mailbox */
        movl    0(%esp), %eax
        movl    %eax, 8(%esi)
        movl    4(%esp), %eax
        movl    %eax, 12(%esi)
        movl    8(%esp), %eax
        movl    %eax, 16(%esi)
        movl    12(%esp), %eax
        movl    %eax, 20(%esi)
        movl    16(%esp), %eax
        movl    %eax, 24(%esi)
        movl    20(%esp), %eax
        movl    %eax, 28(%esi)
        movl    24(%esp), %eax
        movl    %eax, 32(%esi)
        movl    %cr3, %eax
        movl    %eax, 36(%esi)
        movl    %cr0, %eax
        movl    %eax, 40(%esi)
        movl    %cr4, %eax
        movl    %eax, 44(%esi)
        movl    %ebx, 48(%esi)
        movl    4(%esi), %ecx
        incl    %ecx                    /* the answer we wait for */
        movl    %ecx, 0(%esi)           /* posted (x86 stores are ordered) */
        movl    %ebx, %eax
        movw    $DOORBELL_PORT, %dx
        outb    %al, %dx
2:      pause
        cmpl    %ecx, 4(%esi)
        jne     2b
        movl    8(%esi), %eax
        addl    $4, %esp
        popl    %ebx
        popl    %ecx
        popl    %edx
        popl    %esi
        popl    %edi
        popl    %ebp
        popfl
        ret
        .balign 4096, 0xcc
        .section .note.GNU-stack, "", @progbits
