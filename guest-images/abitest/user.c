/*
 * Ring 3: entering it through the iret hypercall, coming back through a
 * DPL-3 trap entry on the stack_switch stack, and what ring 3 may not do
 * (hypercalls, DPL 0/1 vectors, privileged instructions, port I/O,
 * supervisor pages), each with Xen's exception and frame.
 */
#include "abitest.h"

struct user_job {
    unsigned long (*fn)(unsigned long);
    unsigned long arg;
};

static void run_user(void *a)
{
    struct user_job *j = a;

    exec_user(j->fn, j->arg);
}

/* Run fn in ring 3; expect `vector` at `eip` with error code ec (-1: none). */
static void expect_user_fault(unsigned long (*fn)(unsigned long), unsigned long arg,
                              long vector, long ec, const void *eip, const char *what)
{
    struct user_job j = { fn, arg };
    long v = catch_call(run_user, &j);
    bool has_ec = vector >= 0 && vector < 32 && vector_has_errcode(vector);
    struct frame f;

    if (v != vector) {
        why("%s: %s (vector %ld), expected vector %ld", what,
            v == -1 ? "returned normally" : (v < 32 ? exception_name(v) : "soft int"), v,
            vector);
        return;
    }
    f = caught_frame(has_ec);
    if (f.eip != (uint32_t)eip)
        why("%s: EIP %#x, expected %p", what, f.eip, eip);
    if ((f.cs & 0xffff) != FLAT_USER_CS)
        why("%s: CS %#x, expected %#x", what, f.cs & 0xffff, FLAT_USER_CS);
    if (f.ss != FLAT_USER_SS || f.esp < (uint32_t)user_stack || f.esp > (uint32_t)user_stack_top)
        why("%s: ESP/SS %#x/%#x in the frame", what, f.esp, f.ss);
    if (catch_rec.frame_addr != (uint32_t)kstack_top - 64 - (has_ec ? 24 : 20))
        why("%s: frame at %#x, expected on the stack_switch stack at %#x", what,
            catch_rec.frame_addr, (uint32_t)kstack_top - 64 - (has_ec ? 24 : 20));
    if (ec >= 0 && f.ec != (uint32_t)ec)
        why("%s: error code %#x, expected %#lx", what, f.ec, ec);
}

void test_user(void)
{
    unsigned long r;
    static uint32_t supervisor_word __aligned(PAGE_SIZE);

    printk("-- ring 3\n");

    r = exec_user(u_read_cs, 0);
    if ((r & 3) != 3)
        why("%%cs in ring 3 is %#lx", r);
    if ((user_ret_frame[1] & 0xffff) != FLAT_USER_CS || user_ret_frame[4] != FLAT_USER_SS)
        why("int $0x20 frame CS/SS %#x/%#x", user_ret_frame[1], user_ret_frame[4]);
    if (user_ret_frame_addr != (uint32_t)kstack_top - 64 - 20)
        why("int $0x20 frame at %#x, expected %#x (stack_switch)", user_ret_frame_addr,
            (uint32_t)kstack_top - 64 - 20);
    r = exec_user(u_get_esp, 0);
    if (r != (uint32_t)user_stack_top - 8)
        why("ring-3 ESP %#lx after the iret, expected %#x", r, (uint32_t)user_stack_top - 8);
    if (!(user_ret_frame[2] & EFLAGS_IF))
        why("ring-3 EFLAGS %#x without IF", user_ret_frame[2]);
    check_why("user-iret-and-int");

    expect_user_fault(u_hypercall, 0, X86_EXC_GP, (0x82 << 3) | 2, u_hypercall_insn,
                      "int $0x82 from ring 3");
    check_why("user-no-hypercall");
    expect_user_fault(u_int40, 0, X86_EXC_GP, (0x40 << 3) | 2, u_int40_insn,
                      "int $0x40 (DPL 1) from ring 3");
    expect_user_fault(u_int41, 0, 0x41, -1, u_int41_end, "int $0x41 (DPL 3) from ring 3");
    expect_user_fault(u_int3, 0, X86_EXC_BP, -1, u_int3_end, "int3 from ring 3");
    check_why("trap-table-dpl-ring3");
    expect_user_fault(u_cli, 0, X86_EXC_GP, 0, u_cli_insn, "cli in ring 3");
    expect_user_fault(u_inb80, 0, X86_EXC_GP, 0, u_inb80_insn, "inb in ring 3");
    expect_user_fault(u_mov_dr7, 0, X86_EXC_GP, 0, u_mov_dr7_insn, "mov from %dr7 in ring 3");
    check_why("user-privileged");
    expect_user_fault(u_read, (unsigned long)&supervisor_word, X86_EXC_PF, 5, u_read_insn,
                      "ring-3 read of a supervisor page");
    if (catch_rec.vector == X86_EXC_PF && catch_rec.cr2 != (uint32_t)&supervisor_word)
        why("#PF cr2 %#x, expected %p", catch_rec.cr2, &supervisor_word);
    expect_user_fault(u_read, 0x0DEAD000, X86_EXC_PF, 4, u_read_insn,
                      "ring-3 read of an unmapped page");
    check_why("user-page-fault");
    /* With IOPL 3, ring 3 may do port I/O (reads all ones). */
    {
        struct physdev_set_iopl s = { .iopl = 3 };
        long rc = hypercall_physdev_op(PHYSDEVOP_set_iopl, &s);

        r = rc ? 0 : exec_user(u_inb80, 0);
        if (rc || (r & 0xff) != 0xff)
            why("set_iopl(3) = %ld, ring-3 inb read %#lx", rc, r);
        s.iopl = 0;
        hypercall_physdev_op(PHYSDEVOP_set_iopl, &s);
        check_why("user-iopl3-io");
    }
}
