/*
 * The Xen ELF notes (elfnote.h) that tell the domain builder how to load
 * us: a 32-bit PAE PV kernel linked 1:1 (virt_base 0, paddr_offset 0).
 *
 * Assembled once per guest: the Makefile defines GUEST_OS_NAME as a
 * quoted string, e.g. "qemu-xenpv-demo".
 */
#include "xen-abi.h"

#ifndef GUEST_OS_NAME
#error GUEST_OS_NAME must be defined by the Makefile
#endif

/* A note: namesz, descsz, type, name "Xen\0" (4 bytes, stays aligned). */
.macro xen_note_header type, descsz
        .balign 4
        .long   4
        .long   \descsz
        .long   \type
        .asciz  "Xen"
.endm

/* A note whose descriptor is a NUL-terminated string. */
.macro xen_note_str type, str
        xen_note_header \type, (2f-1f)
1:      .asciz  "\str"
2:      .balign 4
.endm

/* A note whose descriptor is one 32-bit word. */
.macro xen_note_word type, value
        xen_note_header \type, 4
        .long   \value
.endm

        .section .note.Xen, "a", @note
        xen_note_str    XEN_ELFNOTE_GUEST_OS,       GUEST_OS_NAME
        xen_note_str    XEN_ELFNOTE_GUEST_VERSION,  "0.1"
        xen_note_str    XEN_ELFNOTE_XEN_VERSION,    "xen-3.0"
        xen_note_str    XEN_ELFNOTE_LOADER,         "generic"
        xen_note_word   XEN_ELFNOTE_VIRT_BASE,      0
        xen_note_word   XEN_ELFNOTE_PADDR_OFFSET,   0
        xen_note_word   XEN_ELFNOTE_ENTRY,          _start
        xen_note_word   XEN_ELFNOTE_HYPERCALL_PAGE, hypercall_page
#ifdef CONFIG_PAE
        xen_note_str    XEN_ELFNOTE_PAE_MODE,       "yes"
        xen_note_str    XEN_ELFNOTE_FEATURES,       "pae_pgdir_above_4gb"
#endif
        /* Without PAE_MODE: a non-PAE kernel ("xen-3.0-x86_32"). */
