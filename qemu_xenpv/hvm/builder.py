"""The HVM domain builder (xc_vmx_build's job in seed 002), in named
phases: the vCPU block, the guest image and its boot data, the boot info
for hvmloader.  Everything is written straight into the domain's RAM file
before QEMU starts; hvmloader does the rest inside the guest."""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import ImageError
from . import layout
from .layout import E820Entry

log = logging.getLogger("qemu_xenpv.hvm.builder")

XEN_HVM_START_MAGIC = 0x336EC578

# struct multiboot_info (Multiboot 0.6.96, 3.3) in the boot-data page:
# flags, mem_lower, mem_upper, boot_device, cmdline, mods_count,
# mods_addr, syms[4], mmap_length, mmap_addr, drives_length, drives_addr,
# config_table, boot_loader_name; the APM, VBE and framebuffer fields
# after it stay zero.  Then the loader name, the memory map (entries with
# their size field), the module list and the modules' strings.
MBI_MEM, MBI_CMDLINE, MBI_MODS, MBI_MMAP, MBI_LOADER_NAME = 1 << 0, 1 << 2, 1 << 3, 1 << 6, 1 << 9
MB_INFO = struct.Struct("<7I16x6I")
MB_INFO_SIZE = 116
MB_MODULE = struct.Struct("<IIII")              # mod_start, mod_end, string, reserved
MB_MMAP_ENTRY = struct.Struct("<IQQI")          # size (20: what follows it), base, length, type
MB_LOADER_NAME = b"qemu-xenpv hvmloader"
MB_NAME_ADDR = layout.BOOT_DATA + 0x80
MB_MMAP_ADDR = layout.BOOT_DATA + 0x100
MB_MODS_ADDR = layout.BOOT_DATA + 0x800
MB_STRINGS_ADDR = MB_MODS_ADDR + MB_MODULE.size
MB_STRINGS_END = layout.BOOT_DATA + 0x1000

# what the guest image may not overlap while hvmloader runs
BUSY = [
    (layout.LOADER_BASE, layout.LOADER_LIMIT, "hvmloader (0x10000-0x7ffff)"),
    (layout.BOOT_DATA, layout.CMDLINE + layout.CMDLINE_MAX, "the boot data (0x90000-0x91fff)"),
    (layout.RESERVED_START, layout.KERNEL_BASE, "the reserved area (0x9f800-0xfffff)"),
]


@dataclass
class HVMBuild:
    kind: int
    entry: int
    boot_data: int
    e820: List[E820Entry]
    vcpu_magic: int
    vcpu_count: int
    notes: List[str] = field(default_factory=list)


def _place(lo: int, hi: int, what: str, mem: int) -> None:
    if hi > layout.pv_area(mem) and hi <= mem:
        raise ImageError(f"{what} ({lo:#x}-{hi - 1:#x}) overlaps the PV area at the top of RAM "
                         f"({layout.pv_area(mem):#x}): raise memory")
    if hi > mem:
        raise ImageError(f"{what} ({lo:#x}-{hi - 1:#x}) does not fit in {mem >> 20} MiB of RAM: "
                         "raise memory")
    for a, b, name in BUSY:
        if layout.overlaps((lo, hi), (a, b)):
            raise ImageError(f"{what} ({lo:#x}-{hi - 1:#x}) overlaps {name}")


def _cmdline(cmdline: str, limit: int) -> bytes:
    raw = cmdline.encode() + b"\0"
    if len(raw) > min(limit, layout.CMDLINE_MAX):
        raise ImageError(f"the command line is {len(raw) - 1} bytes: at most "
                         f"{min(limit, layout.CMDLINE_MAX) - 1} fit")
    return raw


def _ramdisk_addr(size: int, top: int, floor: int) -> int:
    addr = (top - size) & ~0xFFF
    if addr < floor:
        raise ImageError(f"the ramdisk ({size >> 10} KiB) does not fit between the kernel and "
                         f"{top:#x}: raise memory")
    return addr


def build_hvm(cfg, ram) -> HVMBuild:
    mem = ram.size
    magic = layout.VCPU_MAGIC if cfg.vcpu_magic is None else cfg.vcpu_magic
    count = cfg.vcpus if cfg.vcpu_count is None else cfg.vcpu_count
    # phase "vcpu block": what xc_vmx_build.c set_nr_vcpus() wrote
    ram.write(layout.VCPU_BLOCK, layout.vcpu_block(count, magic))
    e820 = layout.build_e820(mem)
    img = cfg.hvm_image
    b = HVMBuild(kind=layout.BOOT_NONE, entry=0, boot_data=0, e820=e820,
                 vcpu_magic=magic, vcpu_count=count)
    # phase "guest image"
    if img is None:
        pass
    elif img.kind == layout.BOOT_LINUX:
        _load_linux(cfg, ram, img, b)
    elif img.kind == layout.BOOT_PVH:
        _load_pvh(cfg, ram, img, b)
    elif img.kind == layout.BOOT_REALMODE:
        _load_realmode(cfg, ram, img, b)
    elif img.kind == layout.BOOT_MULTIBOOT:
        _load_multiboot(cfg, ram, img, b)
    # phase "PV area": the hypercall area, shared_info, the discovery table
    _pv_area(cfg, ram, b)
    # phase "boot info": what hvmloader reads at 0x9F900
    ram.write(layout.BOOT_INFO, layout.boot_info(b.kind, b.entry, b.boot_data, mem))
    return b


def _load_linux(cfg, ram, img, b: HVMBuild) -> None:
    hdr = img.linux
    mem = ram.size
    load = layout.KERNEL_BASE
    _, kdata, _ = img.segments[0]
    # the decompressor works from max(load, pref_address) up to init_size
    base = max(load, hdr.pref_address) if hdr.relocatable else load
    extent = max(load + len(kdata), base + hdr.init_size)
    if extent > layout.pv_area(mem):
        raise ImageError(f"kernel '{img.path}' needs {(extent + (1 << 20) - 1) >> 20} MiB of RAM "
                         f"to decompress; memory is {mem >> 20} MiB")
    _place(load, load + len(kdata), "the kernel", mem)
    ram.write(load, kdata)

    cmd = _cmdline(cfg.cmdline, hdr.cmdline_size + 1 if hdr.cmdline_size else 256)
    ram.write(layout.CMDLINE, cmd)

    rd_addr = rd_size = 0
    if cfg.ramdisk_bytes:
        rd_size = len(cfg.ramdisk_bytes)
        top = min(layout.pv_area(mem), (hdr.initrd_addr_max or 0x37FFFFFF) + 1) & ~0xFFF
        rd_addr = _ramdisk_addr(rd_size, top, extent)
        ram.write(rd_addr, cfg.ramdisk_bytes)

    bp = bytearray(4096)
    bp[0x1F1:hdr.header_end] = img.data[0x1F1:hdr.header_end]
    bp[0x210] = 0xFF                                    # type_of_loader: undefined
    struct.pack_into("<I", bp, 0x214, load)             # code32_start
    struct.pack_into("<II", bp, 0x218, rd_addr, rd_size)
    struct.pack_into("<I", bp, 0x228, layout.CMDLINE)   # cmd_line_ptr
    struct.pack_into("<I", bp, 0x1E0, (mem - layout.KERNEL_BASE) >> 10)    # alt_mem_k
    if len(b.e820) > 128:
        raise AssertionError("e820 too long")
    bp[0x1E8] = len(b.e820)
    for i, e in enumerate(b.e820):
        struct.pack_into("<QQI", bp, 0x2D0 + 20 * i, e.addr, e.size, e.type)
    ram.write(layout.BOOT_DATA, bytes(bp))
    b.kind, b.entry, b.boot_data = layout.BOOT_LINUX, load, layout.BOOT_DATA
    b.notes.append(f"Linux boot protocol {hdr.version >> 8}.{hdr.version & 0xff:02}, kernel "
                   f"{len(kdata) >> 10} KiB at {load:#x}" +
                   (f", initrd {rd_size >> 10} KiB at {rd_addr:#x}" if rd_size else ""))


def _load_segments(ram, img) -> int:
    """Write an image's segments (zero-filling up to memsz) where the
    placement rules allow; returns the end of the highest."""
    end = 0
    for paddr, data, memsz in img.segments:
        _place(paddr, paddr + memsz, f"segment at {paddr:#x} of '{img.path}'", ram.size)
        ram.write(paddr, data)
        if memsz > len(data):
            ram.zero(paddr + len(data), memsz - len(data))
        end = max(end, paddr + memsz)
    return end


def _load_pvh(cfg, ram, img, b: HVMBuild) -> None:
    mem = ram.size
    end = _load_segments(ram, img)

    si = layout.BOOT_DATA
    cmd = _cmdline(cfg.cmdline, layout.CMDLINE_MAX)
    ram.write(layout.CMDLINE, cmd)
    mm = b"".join(struct.pack("<QQII", e.addr, e.size, e.type, 0) for e in b.e820)
    ram.write(layout.PVH_MEMMAP, mm)
    nr_mod, modlist = 0, 0
    if cfg.ramdisk_bytes:
        size = len(cfg.ramdisk_bytes)
        addr = _ramdisk_addr(size, layout.pv_area(mem), (end + 0xFFF) & ~0xFFF)
        ram.write(addr, cfg.ramdisk_bytes)
        modlist = si + 0x800
        ram.write(modlist, struct.pack("<QQQQ", addr, size, 0, 0))
        nr_mod = 1
    # struct hvm_start_info, version 1 (with the memory map); rsdp_paddr
    # is filled in by hvmloader once the tables exist
    ram.write(si, struct.pack("<IIIIQQQQII", XEN_HVM_START_MAGIC, 1, 0, nr_mod, modlist,
                              layout.CMDLINE, 0, layout.PVH_MEMMAP, len(b.e820), 0))
    b.kind, b.entry, b.boot_data = layout.BOOT_PVH, img.entry, si
    b.notes.append(f"PVH entry {img.entry:#x}, {len(img.segments)} segment(s) up to {end:#x}")


def _load_multiboot(cfg, ram, img, b: HVMBuild) -> None:
    """Multiboot 0.6.96: the image, then a multiboot_info with the memory
    sizes, the command line, the ramdisk as module 0 (page-aligned, at the
    top of RAM as the initrd of the other kinds), the e820 map and the
    loader's name.  hvmloader enters with %eax = 0x2BADB002, %ebx = it."""
    mem = ram.size
    end = _load_segments(ram, img)
    ram.write(layout.CMDLINE, _cmdline(cfg.cmdline, layout.CMDLINE_MAX))
    ram.write(MB_NAME_ADDR, MB_LOADER_NAME + b"\0")
    mmap = b"".join(MB_MMAP_ENTRY.pack(MB_MMAP_ENTRY.size - 4, e.addr, e.size, e.type)
                    for e in b.e820)
    assert MB_MMAP_ADDR + len(mmap) <= MB_MODS_ADDR, "e820 too long for the multiboot map"
    ram.write(MB_MMAP_ADDR, mmap)
    nr_mods, mod_note = 0, ""
    if cfg.ramdisk_bytes:
        size = len(cfg.ramdisk_bytes)
        addr = _ramdisk_addr(size, layout.pv_area(mem), (end + 0xFFF) & ~0xFFF)
        ram.write(addr, cfg.ramdisk_bytes)
        name = os.fsencode(os.path.basename(cfg.ramdisk or "")) + b"\0"
        if MB_STRINGS_ADDR + len(name) > MB_STRINGS_END:
            raise ImageError(f"the ramdisk's file name is {len(name) - 1} bytes: at most "
                             f"{MB_STRINGS_END - MB_STRINGS_ADDR - 1} fit")
        ram.write(MB_STRINGS_ADDR, name)
        ram.write(MB_MODS_ADDR, MB_MODULE.pack(addr, addr + size, MB_STRINGS_ADDR, 0))
        nr_mods, mod_note = 1, f", module 0 ({size} bytes) at {addr:#x}"
    ram_kib = {e.addr: e.size >> 10 for e in b.e820 if e.type == layout.E820_RAM}
    info = MB_INFO.pack(MBI_MEM | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME,
                        ram_kib.get(0, 0), ram_kib.get(layout.KERNEL_BASE, 0), 0,
                        layout.CMDLINE, nr_mods, MB_MODS_ADDR, len(mmap), MB_MMAP_ADDR,
                        0, 0, 0, MB_NAME_ADDR)
    ram.write(layout.BOOT_DATA, info + bytes(MB_INFO_SIZE - len(info)))
    b.kind, b.entry, b.boot_data = layout.BOOT_MULTIBOOT, img.entry, layout.BOOT_DATA
    how = "a.out kludge" if img.multiboot.aout_kludge else "ELF"
    b.notes.append(f"multiboot ({how}, flags {img.multiboot.flags:#x}) entry {img.entry:#x}, "
                   f"{len(img.segments)} segment(s) up to {end:#x}{mod_note}")


def _load_realmode(cfg, ram, img, b: HVMBuild) -> None:
    lin, data, _ = img.segments[0]
    if lin + len(data) > 0x100000:
        raise ImageError(f"the real-mode image at {lin:#x} must end below 1 MiB")
    _place(lin, lin + len(data), "the real-mode image", ram.size)
    ram.write(lin, data)
    b.kind, b.entry, b.boot_data = layout.BOOT_REALMODE, img.entry, 0
    cs, ip = img.realmode
    b.notes.append(f"real mode at {cs:04x}:{ip:04x}, {len(data)} bytes at {lin:#x}")


def hypercall_area_image() -> bytes:
    from .. import paths
    p = paths.firmware_dir() / "hvm-hypercall.bin"
    try:
        data = p.read_bytes()
    except OSError:
        raise ImageError(f"firmware {p} is not built: run 'make' in the source tree") from None
    if len(data) != 2 * 4096:
        raise ImageError(f"firmware {p} is not the 8 KiB hypercall area: run 'make'")
    return data


def _pv_area(cfg, ram, b: HVMBuild) -> None:
    """The top 48 KiB of RAM: the hypercall stubs and their mailboxes, the
    shared_info page (until the guest moves it with add_to_physmap), the
    XenStore and console rings; and the table a guest finds them by."""
    from .pv import XEN_VERSION
    area = layout.pv_area(ram.size)
    ram.write(area, hypercall_area_image())
    si = area + layout.PV_SHARED_INFO_PAGE * 4096
    for v in range(min(cfg.vcpus, 32)):
        ram.write(si + v * 64 + 1, b"\x01")        # evtchn_upcall_mask: events masked
    ram.write(layout.PV_INFO, layout.pv_info(ram.size, cfg.vcpus, XEN_VERSION))
