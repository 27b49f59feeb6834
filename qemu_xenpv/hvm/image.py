"""The guest an HVM domain starts after hvmloader: what kind of image it
is and where its pieces go.

* a Linux bzImage (setup header "HdrS"): the 32-bit boot protocol
  (Documentation/arch/x86/boot.rst), as the seed's builder booted Linux
  with boot_params at 0x90000;
* an ELF with a ``XEN_ELFNOTE_PHYS32_ENTRY`` note: the PVH entry with an
  ``hvm_start_info`` (docs/misc/pvh.pandoc);
* a raw image with ``realmode_entry = "CS:IP"``: started in 16-bit real
  mode, the start vmxassist gave its guests.

Multiboot and disk boot are not implemented (docs/hvm.md).
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
    entry: int = 0                  # PVH/realmode: linear entry
    segments: List[Tuple[int, bytes, int]] = field(default_factory=list)   # paddr, data, memsz
    realmode: Optional[Tuple[int, int]] = None

    @property
    def kind_name(self) -> str:
        return layout.BOOT_KIND_NAMES[self.kind]


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
        return _pvh(path, data)
    raise ImageError(f"kernel '{path}' is neither a Linux bzImage nor an ELF with a PVH entry "
                     "(XEN_ELFNOTE_PHYS32_ENTRY); for a raw real-mode image set "
                     "realmode_entry = \"CS:IP\"")


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


def _pvh(path: str, data: bytes) -> HVMImage:
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
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
        segs = []
        for s in elf.iter_segments():
            if s["p_type"] == "PT_LOAD" and s["p_memsz"]:
                segs.append((s["p_paddr"], s.data(), s["p_memsz"]))
    except ELFError as e:
        raise ImageError(f"kernel '{path}': bad ELF ({e})") from None
    if entry is None:
        what = "a Xen PV kernel (boot it without type = \"hvm\")" if pv_notes else "an ELF"
        raise ImageError(f"kernel '{path}' is {what} without a PVH entry "
                         "(XEN_ELFNOTE_PHYS32_ENTRY): multiboot and plain ELF are not supported "
                         "on the HVM path")
    if not segs:
        raise ImageError(f"kernel '{path}' has nothing to load")
    return HVMImage(path=path, kind=layout.BOOT_PVH, data=data, entry=entry, segments=segs)


def _realmode(path: str, data: bytes, cs_ip: Tuple[int, int]) -> HVMImage:
    cs, ip = cs_ip
    lin = (cs << 4) + ip
    if not data:
        raise ImageError(f"kernel '{path}' is empty")
    return HVMImage(path=path, kind=layout.BOOT_REALMODE, data=data, entry=(cs << 16) | ip,
                    segments=[(lin, data, len(data))], realmode=(cs, ip))
