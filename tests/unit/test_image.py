"""Reading Xen PV kernels (qemu_xenpv.image): ELF notes from PT_NOTE
segments and from SHT_NOTE sections, the legacy __xen_guest string with
libelf's rules, and every way a file can fail to be a Xen PV kernel."""

from __future__ import annotations

import shutil

import pytest
from elftools.elf.elffile import ELFFile

from qemu_xenpv import abi
from qemu_xenpv.errors import ImageError, XenPVError
from qemu_xenpv.image import load_kernel, parse_features


# ---- the demo guest ---------------------------------------------------------------
def test_demo_notes(demo_elf):
    img = load_kernel(demo_elf)
    n = img.notes
    assert n["ENTRY"] == img.entry == 0x101000
    assert n["HYPERCALL_PAGE"] == img.hypercall_page == 0x100000
    assert n["PAE_MODE"] == "yes"
    assert n["LOADER"] == img.loader == "generic"
    assert n["XEN_VERSION"] == img.xen_version == "xen-3.0"
    assert n["VIRT_BASE"] == img.virt_base == 0
    assert n["PADDR_OFFSET"] == img.paddr_offset == 0
    assert img.guest_os == "qemu-xenpv-demo"
    assert img.pae == "extended-cr3" and img.is_pae
    assert img.guest_type == "xen-3.0-x86_32p"
    assert img.features_supported == 1 << abi.XENFEAT_pae_pgdir_above_4gb
    assert img.features_required == 0


def test_demo_segments(demo_elf):
    img = load_kernel(demo_elf)
    with open(demo_elf, "rb") as f:
        elf = ELFFile(f)
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"]]
        assert [(s.vaddr, len(s.data), s.memsz) for s in img.segments] == \
            [(p["p_paddr"], p["p_filesz"], p["p_memsz"]) for p in loads]
    assert img.kstart == 0x100000
    assert img.kend == max(s.vaddr + s.memsz for s in img.segments)
    assert img.kstart <= img.entry < img.kend
    assert img.kstart <= img.hypercall_page < img.kend and img.hypercall_page % 4096 == 0
    assert img.symbols_file == str(demo_elf)


def test_non_pae_guest_type(demo_elf):
    import dataclasses
    img = dataclasses.replace(load_kernel(demo_elf), pae="no")
    assert not img.is_pae and img.guest_type == "xen-3.0-x86_32"


# ---- not a Xen PV kernel ------------------------------------------------------------
def test_shim_has_no_notes(shim_elf):
    with pytest.raises(ImageError, match="no Xen ELF notes") as ei:
        load_kernel(shim_elf)
    assert "\n" not in str(ei.value)


def test_64bit_elf():
    ls = shutil.which("ls") or "/bin/ls"
    with pytest.raises(ImageError, match="64-bit"):
        load_kernel(ls)


def test_not_elf(tmp_path):
    p = tmp_path / "bzImage"
    p.write_bytes(b"MZ\x00\x00" + b"\x90" * 4000)
    with pytest.raises(ImageError, match="not an ELF"):
        load_kernel(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="not an ELF"):
        load_kernel(p)


def test_truncated_elf(tmp_path, demo_elf):
    p = tmp_path / "trunc.elf"
    p.write_bytes(demo_elf.read_bytes()[:100])
    with pytest.raises(ImageError):
        load_kernel(p)


def test_big_endian_elf(tmp_path, demo_elf):
    raw = bytearray(demo_elf.read_bytes())
    raw[5] = 2                                          # EI_DATA = ELFDATA2MSB
    p = tmp_path / "be.elf"
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="little-endian"):
        load_kernel(p)


def test_wrong_machine(tmp_path, demo_elf):
    raw = bytearray(demo_elf.read_bytes())
    raw[18:20] = (40).to_bytes(2, "little")             # EM_ARM
    p = tmp_path / "arm.elf"
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="not i386"):
        load_kernel(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_kernel(tmp_path / "no-such-kernel")


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="not a regular file"):
        load_kernel(tmp_path)


def test_errors_are_user_errors():
    assert issubclass(ImageError, XenPVError)


# ---- FEATURES -------------------------------------------------------------------
def test_parse_features():
    sup, req = parse_features("!writable_page_tables|pae_pgdir_above_4gb")
    assert sup == (1 << abi.XENFEAT_writable_page_tables) | (1 << abi.XENFEAT_pae_pgdir_above_4gb)
    assert req == 1 << abi.XENFEAT_writable_page_tables


def test_parse_features_edge_cases():
    assert parse_features("") == (0, 0)
    assert parse_features("||") == (0, 0)
    # an unknown optional feature is ignored, an unknown required one is fatal
    assert parse_features("some_future_feature|dom0") == (1 << abi.XENFEAT_dom0, 0)
    with pytest.raises(ImageError, match="some_future_feature"):
        parse_features("!some_future_feature")
    sup, req = parse_features("!auto_translated_physmap|!supervisor_mode_kernel")
    assert sup == req == (1 << 2) | (1 << 3)


# ---- synthetic kernels ----------------------------------------------------------------
NOTE_MACRO = r"""
.macro ELFNOTE type, desctype, descdata:vararg
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 2f - 1f
    .long 4f - 3f
    .long \type
1:  .asciz "Xen"
2:  .balign 4
3:  \desctype \descdata
4:  .balign 4
    .popsection
.endm
"""

TEXT = r"""
    .text
    .globl _start
_start:
    nop
    jmp _start
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xc3
    .balign 4096
"""


def test_legacy_xen_guest_section(assemble):
    """A 2.6-era kernel: `__xen_guest` with VIRT_BASE, ELF_PADDR_OFFSET 0 and
    a HYPERCALL_PAGE *page number* relative to VIRT_BASE."""
    src = r"""
    .section __xen_guest
    .ascii "GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,"
    .ascii "ELF_PADDR_OFFSET=0x0,HYPERCALL_PAGE=0x101,LOADER=generic,"
    .asciz "FEATURES=writable_page_tables|!pae_pgdir_above_4gb,PAE=yes[extended-cr3]"
""" + TEXT
    lds = """
ENTRY(_start)
SECTIONS {
    . = 0xC0100000;
    .text : AT(0x100000) { *(.text) }
    __xen_guest 0 : { *(__xen_guest) }
}
"""
    path = assemble(src, lds, name="legacy")
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.get_section_by_name("__xen_guest") is not None
        assert not any(s["p_type"] == "PT_NOTE" for s in elf.iter_segments())
    img = load_kernel(path)
    assert img.guest_os == "linux"
    assert img.xen_version == "xen-3.0"
    assert img.loader == "generic"
    assert img.pae == "extended-cr3"                # "yes[extended-cr3]"
    assert img.virt_base == 0xC0000000
    assert img.paddr_offset == 0
    # ELF paddr 0x100000 + (virt_base - paddr_offset)
    assert img.kstart == 0xC0100000
    assert img.segments[0].vaddr == 0xC0100000
    assert img.entry == 0xC0100000                  # e_entry (no VIRT_ENTRY)
    # libelf: (HYPERCALL_PAGE << 12) + virt_base
    assert img.hypercall_page == 0xC0000000 + (0x101 << 12) == 0xC0101000
    assert img.features_required == 1 << abi.XENFEAT_pae_pgdir_above_4gb
    assert img.features_supported & (1 << abi.XENFEAT_writable_page_tables)


def test_legacy_pae_yes_and_paddr_default(assemble):
    """PAE=yes (not extended-cr3); no ELF_PADDR_OFFSET: paddr_offset = virt_base,
    i.e. the ELF's physical addresses are virtual ones (libelf's legacy rule)."""
    src = r"""
    .section __xen_guest
    .asciz "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xC0000000,HYPERCALL_PAGE=0x101,PAE=yes,VIRT_ENTRY=0xC0100001"
""" + TEXT
    lds = """
ENTRY(_start)
SECTIONS {
    . = 0xC0100000;
    .text : { *(.text) }
    __xen_guest 0 : { *(__xen_guest) }
}
"""
    img = load_kernel(assemble(src, lds, name="legacy2"))
    assert img.pae == "yes" and img.is_pae
    assert img.virt_base == img.paddr_offset == 0xC0000000
    assert img.kstart == 0xC0100000
    assert img.entry == 0xC0100001
    assert img.hypercall_page == 0xC0101000


def test_legacy_without_pae(assemble):
    src = r"""
    .section __xen_guest
    .asciz "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0x0,HYPERCALL_PAGE=0x101"
""" + TEXT
    img = load_kernel(assemble(src, name="legacy3"))
    assert img.pae == "no" and img.guest_type == "xen-3.0-x86_32"
    assert img.hypercall_page == 0x101000


def _notes_src(extra: str = "") -> str:
    return NOTE_MACRO + r"""
    ELFNOTE 6, .asciz, "Mini-OS"
    ELFNOTE 5, .asciz, "xen-3.0"
    ELFNOTE 8, .asciz, "generic"
    ELFNOTE 3, .long, 0
    ELFNOTE 4, .long, 0
    ELFNOTE 1, .long, _start
    ELFNOTE 2, .long, hypercall_page
    ELFNOTE 9, .asciz, "yes"
    ELFNOTE 10, .asciz, "!writable_page_tables|pae_pgdir_above_4gb"
""" + extra + TEXT


def test_notes_in_section_without_pt_note(assemble):
    """Mini-OS: the notes are in an SHT_NOTE section, no PT_NOTE segment."""
    lds = """
ENTRY(_start)
PHDRS { text PT_LOAD FILEHDR PHDRS; }
SECTIONS {
    . = 0x0 + SIZEOF_HEADERS;
    .note.Xen : { *(.note.Xen) } :text
    . = ALIGN(4096);
    .text : { *(.text) } :text
}
"""
    path = assemble(_notes_src(), lds, name="minios")
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert not any(s["p_type"] == "PT_NOTE" for s in elf.iter_segments())
        assert elf.get_section_by_name(".note.Xen")["sh_type"] == "SHT_NOTE"
        sym = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
    img = load_kernel(path)
    assert img.guest_os == "Mini-OS"
    assert img.entry == sym["_start"]
    assert img.hypercall_page == sym["hypercall_page"]
    assert img.pae == "extended-cr3"
    assert img.features_required == 1 << abi.XENFEAT_writable_page_tables
    assert img.virt_base == 0 and img.kstart == 0


def test_notes_in_pt_note(assemble):
    path = assemble(_notes_src(), name="ptnote")
    with open(path, "rb") as f:
        assert any(s["p_type"] == "PT_NOTE" for s in ELFFile(f).iter_segments())
    img = load_kernel(path)
    assert img.guest_os == "Mini-OS" and img.loader == "generic"


def test_bimodal_and_no_pae(assemble):
    src = NOTE_MACRO + r"""
    ELFNOTE 5, .asciz, "xen-3.0"
    ELFNOTE 9, .asciz, "bimodal"
""" + TEXT
    assert load_kernel(assemble(src, name="bimodal")).pae == "bimodal"
    src = NOTE_MACRO + r"""
    ELFNOTE 5, .asciz, "xen-3.0"
    ELFNOTE 9, .asciz, "no"
""" + TEXT
    img = load_kernel(assemble(src, name="nopae"))
    assert img.pae == "no" and not img.is_pae
    assert img.hypercall_page is None
    assert img.entry == 0x100000                     # e_entry


def test_64bit_note_values(assemble):
    """ENTRY/HYPERCALL_PAGE may be 8-byte descriptors (.quad)."""
    src = NOTE_MACRO + r"""
    ELFNOTE 1, .quad, 0x100000
    ELFNOTE 2, .quad, 0x101000
    ELFNOTE 9, .asciz, "yes"
""" + TEXT
    img = load_kernel(assemble(src, name="quad"))
    assert img.entry == 0x100000 and img.hypercall_page == 0x101000


@pytest.mark.parametrize("notes,match", [
    ('ELFNOTE 8, .asciz, "linux"', "loader"),
    ('ELFNOTE 1, .long, 0x800000', "entry"),
    ('ELFNOTE 2, .long, 0x900000', "hypercall page"),
    ('ELFNOTE 4, .long, 0x1000', "VIRT_BASE"),
    ('ELFNOTE 10, .asciz, "!no_such_feature"', "no_such_feature"),
])
def test_bad_notes(assemble, notes, match):
    src = NOTE_MACRO + r"""
    ELFNOTE 9, .asciz, "yes"
""" + "    " + notes + "\n" + TEXT
    with pytest.raises(ImageError, match=match):
        load_kernel(assemble(src, name="bad"))


def test_kernel_in_hypervisor_hole(assemble):
    src = NOTE_MACRO + r"""
    ELFNOTE 9, .asciz, "yes"
""" + TEXT
    path = assemble(src, name="hole", base=0xF6000000)
    with pytest.raises(ImageError, match="hypervisor hole"):
        load_kernel(path)
