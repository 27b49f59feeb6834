"""Multiboot 0.6.96 on the HVM path, without QEMU: finding and refusing
headers (image.py), loading a.out kludge and ELF images, and the
multiboot_info the builder writes (builder.py)."""

import struct

import pytest

from qemu_xenpv.errors import ImageError
from qemu_xenpv.hvm import layout
from qemu_xenpv.hvm.builder import (MB_INFO, MB_MMAP_ENTRY, MB_MODULE, MBI_CMDLINE,
                                    MBI_LOADER_NAME, MBI_MEM, MBI_MMAP, MBI_MODS, build_hvm)
from qemu_xenpv.hvm.image import MULTIBOOT_HEADER_MAGIC, load_hvm_image

from test_hvm_builder import ROOT, FakeRAM, bzimage, config

BUILD = ROOT / "guest-images" / "build"
MB_ELF = BUILD / "hvm-multiboot.elf"
MB_BIN = BUILD / "hvm-multiboot.bin"
MB_AOUT_ELF = BUILD / "hvm-multiboot" / "aout.elf"
need_guest = pytest.mark.skipif(not MB_ELF.exists(), reason="run 'make' first")

AOUT = 1 << 16


def header(flags, *addresses, checksum=None):
    if checksum is None:
        checksum = -(MULTIBOOT_HEADER_MAGIC + flags) & 0xFFFFFFFF
    return struct.pack(f"<III{len(addresses)}I", MULTIBOOT_HEADER_MAGIC, flags, checksum,
                       *addresses)


def flat(tmp_path, *, load=0x200000, prefix=0, body=0x200, hdr_at=0x40, flags=AOUT | 3,
         load_end=None, bss=0x1000, entry=0x80, trailer=b"", checksum=None):
    """A flat image: `prefix` junk bytes, then `body` bytes to load at
    `load` with the header `hdr_at` bytes into them, then `trailer`."""
    img = bytearray(b"\xEE" * prefix + bytes(range(256)) * (body // 256) + trailer)
    end = load + body
    fields = (load + hdr_at, load, end if load_end is None else load_end,
              end + bss if bss else 0, load + entry) if flags & AOUT else ()
    hdr = header(flags, *fields, checksum=checksum)
    img[prefix + hdr_at:prefix + hdr_at + len(hdr)] = hdr
    p = tmp_path / "mb.bin"
    p.write_bytes(bytes(img))
    return p


# ---- detection ------------------------------------------------------------
def test_aout_kludge_layout(tmp_path):
    """load_addr below header_addr: loading starts before the header in
    the file; load_end_addr stops before the trailer; the bss follows."""
    p = flat(tmp_path, prefix=0x100, body=0x200, hdr_at=0x40, trailer=b"T" * 64, bss=0x1000)
    data = p.read_bytes()
    img = load_hvm_image(str(p))
    assert img.kind == layout.BOOT_MULTIBOOT and img.kind_name == "multiboot"
    assert img.multiboot.aout_kludge and img.multiboot.offset == 0x140
    assert img.entry == 0x200080
    assert img.segments == [(0x200000, data[0x100:0x300], 0x1200)]


def test_aout_without_load_end_or_bss_loads_the_rest_of_the_file(tmp_path):
    p = flat(tmp_path, prefix=0x20, hdr_at=0x10, load_end=0, bss=0, trailer=b"T" * 100)
    img = load_hvm_image(str(p))
    assert img.segments == [(0x200000, p.read_bytes()[0x20:], 0x200 + 100)]


def test_unknown_optional_flags_are_ignored(tmp_path):
    assert load_hvm_image(str(flat(tmp_path, flags=AOUT | 3 | 1 << 20))).kind == layout.BOOT_MULTIBOOT


@pytest.mark.parametrize("flags,match", [
    (AOUT | 1 << 2, r"video mode \(bit 2\)"),
    (AOUT | 1 << 5, r"requires what hvmloader does not provide: bit 5 "),
    (AOUT | 1 << 2 | 1 << 15, r"bit 2\).*, bit 15"),
])
def test_required_flags_the_loader_lacks_are_refused(tmp_path, flags, match):
    with pytest.raises(ImageError, match=match):
        load_hvm_image(str(flat(tmp_path, flags=flags)))


def test_bad_checksum(tmp_path):
    with pytest.raises(ImageError, match="header at offset 0x40 has a bad checksum"):
        load_hvm_image(str(flat(tmp_path, checksum=0x12345678)))


def test_a_valid_header_after_a_bad_one_is_used(tmp_path):
    p = flat(tmp_path, hdr_at=0x40)
    data = bytearray(p.read_bytes())
    data[0x20:0x2C] = header(3, checksum=0)            # a stray magic first
    p.write_bytes(bytes(data))
    assert load_hvm_image(str(p)).multiboot.offset == 0x40


@pytest.mark.parametrize("where", ["beyond 8 KiB", "unaligned"])
def test_header_must_be_aligned_in_the_first_8k(tmp_path, where):
    body = bytearray(0x3000)
    at = 0x2000 if where == "beyond 8 KiB" else 0x42
    body[at:at + 32] = header(AOUT | 3, 0x200000 + at, 0x200000, 0, 0, 0x200000)
    p = tmp_path / "k.bin"
    p.write_bytes(bytes(body))
    with pytest.raises(ImageError, match="neither a Linux bzImage, an ELF with a PVH entry"):
        load_hvm_image(str(p))


@pytest.mark.parametrize("cut,match", [
    (0x48, "ends inside the multiboot header"),
    (0x50, "lacks the address fields"),
    (0x1F0, "truncated: its multiboot header loads 512 bytes"),
])
def test_truncated_image(tmp_path, cut, match):
    p = flat(tmp_path)
    p.write_bytes(p.read_bytes()[:cut])
    with pytest.raises(ImageError, match=match):
        load_hvm_image(str(p))


@pytest.mark.parametrize("kw,match", [
    (dict(hdr_at=0x40, prefix=0, load_end=0x100000), "load_end_addr 0x100000 is not above"),
    (dict(bss=0, load_end=0x200100, entry=0x180), "entry 0x200180 is outside"),
    (dict(entry=0x2000), "entry 0x202000 is outside"),
])
def test_inconsistent_address_fields(tmp_path, kw, match):
    with pytest.raises(ImageError, match=match):
        load_hvm_image(str(flat(tmp_path, **kw)))


def test_load_addr_above_header_addr_or_before_the_file(tmp_path):
    p = tmp_path / "k.bin"
    p.write_bytes(header(AOUT | 3, 0x200000, 0x200010, 0, 0, 0x200010) + bytes(64))
    with pytest.raises(ImageError, match="load_addr 0x200010 is above header_addr"):
        load_hvm_image(str(p))
    p.write_bytes(header(AOUT | 3, 0x200010, 0x200000, 0, 0, 0x200010) + bytes(64))
    with pytest.raises(ImageError, match="16 bytes before the start of the file"):
        load_hvm_image(str(p))


def test_bss_end_below_the_loaded_image(tmp_path):
    p = tmp_path / "k.bin"
    p.write_bytes(header(AOUT | 3, 0x200000, 0x200000, 0x200100, 0x200080, 0x200000)
                  + bytes(0x100))
    with pytest.raises(ImageError, match="bss_end_addr 0x200080 is below"):
        load_hvm_image(str(p))


def test_without_address_fields_only_an_elf_will_do(tmp_path):
    with pytest.raises(ImageError, match="not an ELF and its multiboot header has no address"):
        load_hvm_image(str(flat(tmp_path, flags=3)))


def test_a_bzimage_stays_a_bzimage(tmp_path):
    k = bzimage(tmp_path, pm=header(AOUT | 3, 0x100000, 0x100000, 0, 0, 0x100000) + bytes(4096))
    assert load_hvm_image(str(k)).kind == layout.BOOT_LINUX


# ---- ELF images -----------------------------------------------------------
MB_ASM = """
        .text
        .balign 4
        .long 0x1BADB002, 3, -(0x1BADB002 + 3)
        .globl _start
_start: hlt
"""
PVH_NOTE = """
        .section .note.Xen, "a"
        .balign 4
        .long 4, 4, 18
        .asciz "Xen"
        .long _start
"""


def test_elf_is_loaded_by_its_program_headers(assemble):
    img = load_hvm_image(str(assemble(MB_ASM)))
    assert img.kind == layout.BOOT_MULTIBOOT and not img.multiboot.aout_kludge
    assert img.entry == 0x10000C and img.segments[0][0] == 0x100000


def test_pvh_note_wins_over_a_multiboot_header(assemble):
    img = load_hvm_image(str(assemble(MB_ASM + PVH_NOTE)))
    assert img.kind == layout.BOOT_PVH and img.entry == 0x10000C


def test_elf_entry_is_made_physical(assemble):
    """Linked high, loaded low: e_entry is a virtual address in the segment
    whose p_paddr says where it goes."""
    elf = assemble(MB_ASM, "ENTRY(_start)\nSECTIONS {\n  . = 0xC0100000;\n"
                           "  .text : AT(0x100000) { *(.text) }\n}\n")
    img = load_hvm_image(str(elf))
    assert img.segments[0][0] == 0x100000 and img.entry == 0x10000C


@need_guest
def test_the_test_guest_elf():
    img = load_hvm_image(str(MB_ELF))
    assert img.kind == layout.BOOT_MULTIBOOT and not img.multiboot.aout_kludge
    assert img.multiboot.offset < 8192 and img.multiboot.flags == 3


@need_guest
def test_address_fields_win_over_the_elf_headers():
    """The same guest linked with the a.out kludge: an ELF whose header has
    flags bit 16 loads by the header's fields, exactly the flat image."""
    img = load_hvm_image(str(MB_AOUT_ELF))
    assert img.multiboot.aout_kludge
    assert img.segments[0][0] == 0x100000 and img.segments[0][1] == MB_BIN.read_bytes()
    flat_img = load_hvm_image(str(MB_BIN))
    assert (flat_img.entry, flat_img.segments) == (img.entry, img.segments)


@need_guest
def test_truncated_elf(tmp_path):
    p = tmp_path / "cut.elf"
    p.write_bytes(MB_ELF.read_bytes()[:0x1800])        # the header is at 0x1000
    with pytest.raises(ImageError, match="truncated"):
        load_hvm_image(str(p))


# ---- placement: the builder's checks for every kind -------------------------
@pytest.mark.parametrize("load,match", [
    (0x70000, "overlaps hvmloader"),
    (0x90000, "overlaps the boot data"),
    (0x9F000, "overlaps the reserved area"),
    (layout.pv_area(32 << 20) - 0x100, "overlaps the PV area"),
    (64 << 20, "does not fit in 32 MiB"),
])
def test_segments_may_not_overlap_the_loader_or_reserved_memory(tmp_path, load, match):
    with pytest.raises(ImageError, match=match):
        build_hvm(config(flat(tmp_path, load=load), memory=32), FakeRAM(32))


# ---- the multiboot_info ----------------------------------------------------------
def mbi_of(ram):
    names = ("flags mem_lower mem_upper boot_device cmdline mods_count mods_addr "
             "mmap_length mmap_addr drives_length drives_addr config_table boot_loader_name")
    return dict(zip(names.split(), MB_INFO.unpack(ram.read(layout.BOOT_DATA, MB_INFO.size))))


def cstring(ram, addr):
    raw = ram.read(addr, 256)
    return raw[:raw.index(0)].decode()


def test_multiboot_info(tmp_path):
    p = flat(tmp_path, bss=0x3000)
    cfg = config(p, memory=32)
    cfg.cmdline = "console=com1 answer=42"
    ram = FakeRAM(32)
    ram.mem[0x200200:0x203200] = b"\xAA" * 0x3000      # the bss must come out zeroed
    b = build_hvm(cfg, ram)
    assert (b.kind, b.entry, b.boot_data) == (layout.BOOT_MULTIBOOT, 0x200080, layout.BOOT_DATA)
    bi = layout.unpack_boot_info(ram.read(layout.BOOT_INFO, layout.BOOT_INFO_SIZE))
    assert bi["checksum_ok"] and bi["boot_kind"] == layout.BOOT_MULTIBOOT
    assert ram.read(0x200000, 0x40) == bytes(range(0x40))
    assert ram.read(0x200200, 0x3000) == bytes(0x3000)

    mbi = mbi_of(ram)
    assert mbi["flags"] == MBI_MEM | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME
    e820 = layout.build_e820(32 << 20)
    ram_at = {e.addr: e.size for e in e820 if e.type == layout.E820_RAM}
    assert mbi["mem_lower"] == 638 == ram_at[0] >> 10
    assert mbi["mem_upper"] == ram_at[0x100000] >> 10
    assert cstring(ram, mbi["cmdline"]) == "console=com1 answer=42"
    assert cstring(ram, mbi["boot_loader_name"]) == "qemu-xenpv hvmloader"
    assert mbi["mods_count"] == 0

    n = mbi["mmap_length"] // MB_MMAP_ENTRY.size
    assert mbi["mmap_length"] == n * MB_MMAP_ENTRY.size
    entries = [MB_MMAP_ENTRY.unpack(ram.read(mbi["mmap_addr"] + i * MB_MMAP_ENTRY.size,
                                             MB_MMAP_ENTRY.size)) for i in range(n)]
    assert entries == [(20, e.addr, e.size, e.type) for e in e820]
    # everything the guest is pointed at lies in the boot-data area
    for addr in (mbi["cmdline"], mbi["mmap_addr"], mbi["mods_addr"], mbi["boot_loader_name"]):
        assert layout.BOOT_DATA <= addr < layout.CMDLINE + layout.CMDLINE_MAX


def test_ramdisk_is_module_0(tmp_path):
    rd = tmp_path / "initrd.img"
    rd.write_bytes(b"MODULE" * 1000)
    cfg = config(flat(tmp_path), memory=32)
    cfg.ramdisk, cfg.ramdisk_bytes = str(rd), rd.read_bytes()
    ram = FakeRAM(32)
    b = build_hvm(cfg, ram)
    mbi = mbi_of(ram)
    assert mbi["mods_count"] == 1
    start, end, string, _ = MB_MODULE.unpack(ram.read(mbi["mods_addr"], MB_MODULE.size))
    assert start % 4096 == 0 and end - start == 6000
    assert end <= layout.pv_area(32 << 20)                # at the top, as the initrd of the others
    assert ram.read(start, 6000) == rd.read_bytes()
    assert cstring(ram, string) == "initrd.img"
    assert "module 0 (6000 bytes)" in b.notes[0]


def test_command_line_limit(tmp_path):
    cfg = config(flat(tmp_path), memory=32)
    cfg.cmdline = "x" * layout.CMDLINE_MAX
    with pytest.raises(ImageError, match="command line"):
        build_hvm(cfg, FakeRAM(32))
