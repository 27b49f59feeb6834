"""The guest an HVM domain starts after hvmloader: what kind of image it
is and where its pieces go.

* a Linux bzImage (setup header "HdrS"): the 32-bit boot protocol
  (Documentation/arch/x86/boot.rst), as the seed's builder booted Linux
  with boot_params at 0x90000;
* an ELF with a ``XEN_ELFNOTE_PHYS32_ENTRY`` note: the PVH entry with an
  ``hvm_start_info`` (docs/misc/pvh.pandoc);
* a Multiboot image (the GNU Multiboot Specification 0.6.96): a header
  with magic 0x1BADB002 in the first 8192 bytes, loaded by its a.out
  kludge address fields (flags bit 16; they win over an ELF's own
  headers, as the specification says) or else as an ELF (PT_LOAD
  segments by p_paddr, entry e_entry); started with a multiboot_info;
* a raw image with ``realmode_entry = "CS:IP"``: started in 16-bit real
  mode, the start vmxassist gave its guests.

Precedence: a bzImage is a bzImage; an ELF with the PVH note boots PVH
even if it also carries a multiboot header; then the multiboot header.
Disk boot is not implemented (docs/hvm.md).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import ImageError
from . import layout

XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_ELFNOTE_ENTRY = 1

# The Multiboot header (Multiboot 0.6.96, 3.1): magic, flags, checksum,
# then with flags bit 16 header_addr, load_addr, load_end_addr,
# bss_end_addr, entry_addr.
MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192             # the header lies in the first 8 KiB, 4-byte aligned
MB_PAGE_ALIGN = 1 << 0              # required: modules page-aligned (always so here)
MB_MEMORY_INFO = 1 << 1             # required: mem_* (and the mmap; always given)
MB_VIDEO_MODE = 1 << 2              # required: a video mode table (no display here)
MB_AOUT_KLUDGE = 1 << 16            # optional: the address fields are valid
MB_REQUIRED_HONOURED = MB_PAGE_ALIGN | MB_MEMORY_INFO
_MB_MAGIC = struct.Struct("<III")
_MB_ADDRESSES = struct.Struct("<IIIII")


@dataclass
class LinuxHeader:
    version: int
    setup_sects: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    cmdline_size: int
    relocatable: bool
    kernel_alignment: int
    pref_address: int
    init_size: int
    header_end: int                 # 0x202 + byte at 0x201


@dataclass
class HVMImage:
    path: str
    kind: int                       # layout.BOOT_*
    data: bytes = b""
    linux: Optional[LinuxHeader] = None
    entry: int = 0                  # PVH/multiboot: physical entry; realmode: cs << 16 | ip
    segments: List[Tuple[int, bytes, int]] = field(default_factory=list)   # paddr, data, memsz
    realmode: Optional[Tuple[int, int]] = None
    multiboot: Optional["MultibootHeader"] = None

    @property
    def kind_name(self) -> str:
        return layout.BOOT_KIND_NAMES[self.kind]


@dataclass
class MultibootHeader:
    offset: int                     # in the file
    flags: int
    addresses: Optional[Tuple[int, int, int, int, int]] = None   # with MB_AOUT_KLUDGE

    @property
    def aout_kludge(self) -> bool:
        return bool(self.flags & MB_AOUT_KLUDGE)


def parse_cs_ip(text) -> Tuple[int, int]:
    """'0x0000:0x7c00' -> (0, 0x7c00)."""
    try:
        cs, ip = (int(p, 0) for p in str(text).split(":"))
    except (ValueError, TypeError):
        raise ImageError(f"realmode_entry {text!r}: expected \"CS:IP\", e.g. \"0x0000:0x7c00\"") from None
    if not (0 <= cs <= 0xFFFF and 0 <= ip <= 0xFFFF):
        raise ImageError(f"realmode_entry {text!r}: CS and IP are 16-bit values")
    return cs, ip


def load_hvm_image(path: str, realmode_entry: Optional[Tuple[int, int]] = None) -> HVMImage:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageError(f"kernel '{path}' not found") from None
    except OSError as e:
        raise ImageError(f"kernel '{path}': {e.strerror}") from None
    if realmode_entry is not None:
        return _realmode(path, data, realmode_entry)
    if len(data) >= 0x264 and data[0x202:0x206] == b"HdrS":
        return _linux(path, data)
    if data[:4] == b"\x7fELF":
        return _elf(path, data)
    mb = find_multiboot_header(path, data)
    if mb is not None:
        return _multiboot(path, data, mb)
    raise ImageError(f"kernel '{path}' is neither a Linux bzImage, an ELF with a PVH entry "
                     "(XEN_ELFNOTE_PHYS32_ENTRY) nor a multiboot image; for a raw real-mode "
                     "image set realmode_entry = \"CS:IP\"")


def _linux(path: str, data: bytes) -> HVMImage:
    u8 = lambda o: data[o]
    u16 = lambda o: struct.unpack_from("<H", data, o)[0]
    u32 = lambda o: struct.unpack_from("<I", data, o)[0]
    version = u16(0x206)
    if version < 0x0206:
        raise ImageError(f"kernel '{path}': Linux boot protocol {version >> 8}.{version & 0xff:02} "
                         "is too old (2.06 or later is needed)")
    loadflags = u8(0x211)
    if not loadflags & 1:
        raise ImageError(f"kernel '{path}' is a zImage (loaded low): only bzImage is supported")
    setup_sects = u8(0x1F1) or 4
    hdr = LinuxHeader(version=version, setup_sects=setup_sects, loadflags=loadflags,
                      code32_start=u32(0x214), initrd_addr_max=u32(0x22C),
                      cmdline_size=u32(0x238), relocatable=bool(u8(0x234)),
                      kernel_alignment=u32(0x230),
                      pref_address=struct.unpack_from("<Q", data, 0x258)[0] if version >= 0x020A else 0x100000,
                      init_size=u32(0x260) if version >= 0x020A else 0,
                      header_end=0x202 + u8(0x201))
    pm_off = (setup_sects + 1) * 512
    if pm_off >= len(data):
        raise ImageError(f"kernel '{path}': truncated bzImage")
    return HVMImage(path=path, kind=layout.BOOT_LINUX, data=data, linux=hdr,
                    entry=layout.KERNEL_BASE,
                    segments=[(layout.KERNEL_BASE, data[pm_off:], len(data) - pm_off)])


def _elf(path: str, data: bytes) -> HVMImage:
    """A 32-bit x86 ELF: PVH if it has the PVH note, else multiboot."""
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            mb = find_multiboot_header(path, data)
            if mb is not None and mb.aout_kludge:   # its address fields say it all
                return _multiboot(path, data, mb)
            raise ImageError(f"kernel '{path}' is not a 32-bit x86 ELF")
        entry = None
        pv_notes = False
        notes = [s for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"] + \
                [s for s in elf.iter_sections() if s["sh_type"] == "SHT_NOTE"]
        for holder in notes:
            for n in holder.iter_notes():
                if n["n_name"] != "Xen":
                    continue
                pv_notes = True
                if n["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                    desc = n["n_descdata"]
                    if isinstance(desc, str):
                        desc = desc.encode("latin-1")
                    entry = struct.unpack_from("<I", desc)[0]
        segs, vaddrs = [], []
        for s in elf.iter_segments():
            if s["p_type"] == "PT_LOAD" and s["p_memsz"]:
                seg = s.data()
                if len(seg) != s["p_filesz"] or s["p_filesz"] > s["p_memsz"]:
                    raise ImageError(f"kernel '{path}' is truncated or corrupt: the segment "
                                     f"at {s['p_paddr']:#x} has {len(seg)} of its "
                                     f"{s['p_filesz']} bytes")
                segs.append((s["p_paddr"], seg, s["p_memsz"]))
                vaddrs.append(s["p_vaddr"])
        e_entry = elf["e_entry"]
    except ELFError as e:
        raise ImageError(f"kernel '{path}': bad ELF ({e})") from None
    if entry is None:
        # no PVH note: a multiboot header decides (the PVH note wins over it)
        mb = find_multiboot_header(path, data)
        if mb is not None:
            if not mb.aout_kludge:
                # e_entry is virtual: the physical entry is where its segment loads
                e_entry = next((p + e_entry - v for (p, _, m), v in zip(segs, vaddrs)
                                if v <= e_entry < v + m), e_entry)
            return _multiboot(path, data, mb, segs, e_entry)
        what = "a Xen PV kernel (boot it without type = \"hvm\")" if pv_notes else "an ELF"
        raise ImageError(f"kernel '{path}' is {what} without a PVH entry "
                         "(XEN_ELFNOTE_PHYS32_ENTRY) or a multiboot header: plain ELF is not "
                         "supported on the HVM path")
    if not segs:
        raise ImageError(f"kernel '{path}' has nothing to load")
    return HVMImage(path=path, kind=layout.BOOT_PVH, data=data, entry=entry, segments=segs)


def find_multiboot_header(path: str, data: bytes) -> Optional[MultibootHeader]:
    """The first valid multiboot header in the first 8 KiB (None if there
    is no magic); refuses a header whose checksum is wrong or whose
    required features (flags bits 0-15) the loader does not provide."""
    magic = struct.pack("<I", MULTIBOOT_HEADER_MAGIC)
    bad = None
    off = data.find(magic, 0, MULTIBOOT_SEARCH)
    while off >= 0:
        if off % 4 == 0 and off + _MB_MAGIC.size > len(data):
            raise ImageError(f"kernel '{path}' is truncated: it ends inside the multiboot "
                             f"header at offset {off:#x}")
        if off % 4 == 0 and off + _MB_MAGIC.size <= MULTIBOOT_SEARCH:
            _, flags, csum = _MB_MAGIC.unpack_from(data, off)
            if (MULTIBOOT_HEADER_MAGIC + flags + csum) & 0xFFFFFFFF == 0:
                return _multiboot_header(path, data, off, flags)
            bad = off if bad is None else bad
        off = data.find(magic, off + 1, MULTIBOOT_SEARCH)
    if bad is not None:
        raise ImageError(f"kernel '{path}': the multiboot header at offset {bad:#x} has a bad "
                         "checksum (magic + flags + checksum must be 0 mod 2^32)")
    return None


def _multiboot_header(path: str, data: bytes, off: int, flags: int) -> MultibootHeader:
    missing = flags & 0xFFFF & ~MB_REQUIRED_HONOURED
    if missing:
        bits = [i for i in range(16) if missing >> i & 1]
        what = ", ".join("a video mode (bit 2): there is no display" if 1 << i == MB_VIDEO_MODE
                         else f"bit {i}" for i in bits)
        raise ImageError(f"kernel '{path}': its multiboot header requires what hvmloader does "
                         f"not provide: {what} (only flags bits 0 and 1 of 0-15 are honoured)")
    addresses = None
    if flags & MB_AOUT_KLUDGE:
        if off + _MB_MAGIC.size + _MB_ADDRESSES.size > len(data):
            raise ImageError(f"kernel '{path}' is truncated: its multiboot header at offset "
                             f"{off:#x} lacks the address fields flags bit 16 announces")
        addresses = _MB_ADDRESSES.unpack_from(data, off + _MB_MAGIC.size)
    return MultibootHeader(offset=off, flags=flags, addresses=addresses)


def _multiboot(path: str, data: bytes, mb: MultibootHeader,
               elf_segments: Optional[List[Tuple[int, bytes, int]]] = None,
               elf_entry: int = 0) -> HVMImage:
    if mb.aout_kludge:
        header_addr, load_addr, load_end, bss_end, entry = mb.addresses
        if load_addr > header_addr:
            raise ImageError(f"kernel '{path}': multiboot load_addr {load_addr:#x} is above "
                             f"header_addr {header_addr:#x}")
        file_off = mb.offset - (header_addr - load_addr)
        if file_off < 0:
            raise ImageError(f"kernel '{path}': multiboot load_addr {load_addr:#x} lies "
                             f"{-file_off} bytes before the start of the file")
        if load_end == 0:
            size = len(data) - file_off
        elif load_end <= load_addr:
            raise ImageError(f"kernel '{path}': multiboot load_end_addr {load_end:#x} is not "
                             f"above load_addr {load_addr:#x}")
        else:
            size = load_end - load_addr
        if file_off + size > len(data):
            raise ImageError(f"kernel '{path}' is truncated: its multiboot header loads {size} "
                             f"bytes from offset {file_off:#x}, the file has {len(data)}")
        if bss_end and bss_end < load_addr + size:
            raise ImageError(f"kernel '{path}': multiboot bss_end_addr {bss_end:#x} is below "
                             f"the end of the loaded image {load_addr + size:#x}")
        segs = [(load_addr, data[file_off:file_off + size], (bss_end or load_addr + size) - load_addr)]
    elif elf_segments is None:
        raise ImageError(f"kernel '{path}' is not an ELF and its multiboot header has no "
                         "address fields (flags bit 16): nothing says where to load it")
    else:
        segs, entry = elf_segments, elf_entry
        if not segs:
            raise ImageError(f"kernel '{path}' has nothing to load")
    if not any(a <= entry < a + m for a, _, m in segs):
        raise ImageError(f"kernel '{path}': the multiboot entry {entry:#x} is outside the "
                         "image it loads")
    return HVMImage(path=path, kind=layout.BOOT_MULTIBOOT, data=data, entry=entry,
                    segments=segs, multiboot=mb)


def _realmode(path: str, data: bytes, cs_ip: Tuple[int, int]) -> HVMImage:
    cs, ip = cs_ip
    lin = (cs << 4) + ip
    if not data:
        raise ImageError(f"kernel '{path}' is empty")
    return HVMImage(path=path, kind=layout.BOOT_REALMODE, data=data, entry=(cs << 16) | ip,
                    segments=[(lin, data, len(data))], realmode=(cs, ip))
