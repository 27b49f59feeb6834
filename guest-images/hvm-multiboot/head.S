/*
 * hvm-multiboot start of day.  The multiboot header (with -DAOUT_KLUDGE
 * also the address fields of flags bit 16), then _start: it records the
 * machine state the loader handed over before anything can change it,
 * takes its own stack and calls mb_main(&entry_state).  It never loads a
 * segment register: the GDT is the loader's (the specification allows it
 * to be invalid).
 */
#define MB_HEADER_MAGIC 0x1badb002
#ifdef AOUT_KLUDGE
#define MB_FLAGS        0x00010003      /* page-aligned modules, memory info, addresses */
#else
#define MB_FLAGS        0x00000003      /* page-aligned modules, memory info */
#endif

        .section .multiboot, "a"
        .balign 4
mb_header:
        .long MB_HEADER_MAGIC
        .long MB_FLAGS
        .long -(MB_HEADER_MAGIC + MB_FLAGS)
#ifdef AOUT_KLUDGE
        .long mb_header                 /* header_addr   */
        .long _image_start              /* load_addr     */
        .long _edata                    /* load_end_addr */
        .long _end                      /* bss_end_addr  */
        .long _start                    /* entry_addr    */
#endif

        .text
        .globl _start
_start:
        movl    %eax, entry_state + 0
        movl    %ebx, entry_state + 4
        movl    $stack_top, %esp        /* movl leaves EFLAGS alone */
        pushfl
        popl    entry_state + 8
        movl    %cr0, %eax
        movl    %eax, entry_state + 12
        movw    %cs, entry_state + 16
        movw    %ds, entry_state + 18
        movw    %es, entry_state + 20
        movw    %fs, entry_state + 22
        movw    %gs, entry_state + 24
        movw    %ss, entry_state + 26
        sgdt    entry_state + 28        /* 6 bytes: limit, base */
        cld
        pushl   $entry_state
        call    mb_main
1:      cli
        hlt
        jmp     1b

        .data
        .balign 4
        .globl entry_state
entry_state:
        .skip 36

        .bss
        .balign 16
        .skip 16384
stack_top:

        .section .note.GNU-stack, "", @progbits
