"""What a crashed guest looked like: registers, the code location with
symbols when the kernel ELF has them, the stack and a frame-pointer
backtrace, in the spirit of Xen's domain_crash output:

    d3v0 (test) crashed:
    EIP:    e019:[<00101087>] xtfish_fault+0x37/0x3f
    ...
    Call trace (frame pointers):
       [<00101087>] xtfish_fault+0x37/0x3f
       [<0010133a>] main+0x27a/0x27a

Return addresses are looked up one byte back (as Linux and Xen do): a call
to a function that never returns is often the last instruction of its
caller, so the return address is the caller's end.
"""

from __future__ import annotations

import bisect
from functools import lru_cache
from typing import List, Optional, Tuple

from elftools.elf.elffile import ELFFile

# symbol kinds that name code (or the hypercall page, an object in .text),
# best first when several start at one address
_KIND_RANK = {"STT_FUNC": 0, "STT_OBJECT": 1, "STT_NOTYPE": 2}
MAX_UNSIZED_OFFSET = 0x10000        # how far past an unsized label we still name it

Symbol = Tuple[int, int, int, str]  # (address, size, rank, name)


@lru_cache(maxsize=16)
def _symbols(path: str) -> Tuple[List[int], List[Symbol]]:
    syms: List[Symbol] = []
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            tab = elf.get_section_by_name(".symtab")
            if tab is not None:
                for s in tab.iter_symbols():
                    kind = s["st_info"]["type"]
                    if kind in _KIND_RANK and s.name and s["st_value"] and \
                            s["st_shndx"] != "SHN_UNDEF":
                        syms.append((s["st_value"], s["st_size"], _KIND_RANK[kind], s.name))
    except Exception:
        pass
    syms.sort()
    return [a for a, _, _, _ in syms], syms


def lookup(path: Optional[str], addr: int) -> Optional[Tuple[str, int, int]]:
    """(name, offset, size) of the symbol holding `addr`, or None.

    A sized symbol that contains the address wins (a function over a data
    object over a label); otherwise the nearest label below it, within 64 KiB."""
    if not path:
        return None
    keys, syms = _symbols(path)
    i = bisect.bisect_right(keys, addr) - 1
    best = None
    label = None
    # walk back over the symbols that start at or below addr; a containing
    # sized symbol may start before a nearer small one
    for j in range(i, max(-1, i - 64), -1):
        start, size, rank, name = syms[j]
        if size:
            if start <= addr < start + size and (best is None or (rank, -start) < best[0]):
                best = ((rank, -start), name, addr - start, size)
        elif label is None and addr - start <= MAX_UNSIZED_OFFSET:
            label = (name, addr - start, 0)
    if best is not None:
        return best[1], best[2], best[3]
    return label


def symbolize(path: Optional[str], addr: int, return_address: bool = False) -> str:
    """``name+0xoff/0xsize`` for an address ("" when no symbol holds it).
    A return address is looked up at addr - 1 and shown as itself."""
    hit = lookup(path, addr - 1 if return_address and addr else addr)
    if hit is None:
        return ""
    name, off, size = hit
    if return_address and addr:
        off += 1
    return f"{name}+{off:#x}" + (f"/{size:#x}" if size else "")


def register_dump(dom, vcpu, r: dict) -> List[str]:
    sym_path = dom.config.kernel_image.symbols_file if dom.config.kernel_image else None

    def loc(a: int, ret: bool = False) -> str:
        s = symbolize(sym_path, a, ret)
        return f"[<{a:08x}>] {s}" if s else f"[<{a:08x}>]"

    cr2 = None
    try:                                        # the CPU's CR2 at the last #PF
        if vcpu.mbox.get("trap_vector") == 14:
            cr2 = vcpu.mbox.get("trap_cr2")
    except Exception:
        pass
    if cr2 is None:                             # what the guest was last told
        cr2 = dom.ram.r32(vcpu.vcpu_info_pa + 8)
    out = [f"d{dom.domid}v{vcpu.vid} ({dom.name}) crashed:",
           f"EIP:    {r['cs']:04x}:{loc(r['eip'])}",
           f"EFLAGS: {r['eflags']:08x}   CONTEXT: pv guest, ring {r['cs'] & 3}",
           f"eax: {r['eax']:08x}   ebx: {r['ebx']:08x}   ecx: {r['ecx']:08x}   edx: {r['edx']:08x}",
           f"esi: {r['esi']:08x}   edi: {r['edi']:08x}   ebp: {r['ebp']:08x}   esp: {r['esp']:08x}",
           f"cr2: {cr2:08x}   cr3: {(vcpu.guest_table or 0) << 12:08x}",
           f"ds: {r['ds'] & 0xffff:04x}   es: {r['es'] & 0xffff:04x}   fs: {r['fs'] & 0xffff:04x}   "
           f"gs: {r['gs'] & 0xffff:04x}   ss: {r['ss'] & 0xffff:04x}   cs: {r['cs'] & 0xffff:04x}"]
    try:
        last = {f: vcpu.mbox.get("last_trap_" + f) for f in ("vector", "errcode", "eip", "cs", "cr2")}
    except Exception:
        last = {"vector": 0}
    if last["vector"]:
        vec = last["vector"] - 1
        from .traps import VECTOR_NAMES
        out.append(f"Last exception bounced to the guest: {vec} "
                   f"({VECTOR_NAMES.get(vec, 'vector')}), error code {last['errcode']:#x}"
                   + (f", cr2 {last['cr2']:08x}" if vec == 14 else ""))
        out.append(f"    at {last['cs'] & 0xffff:04x}:{loc(last['eip'])}")
    stack = dom.copy_from_guest(vcpu, r["esp"], 64) if vcpu.guest_table else None
    if stack:
        out.append(f"Guest stack trace from esp={r['esp']:08x}:")
        words = [int.from_bytes(stack[i:i + 4], "little") for i in range(0, len(stack), 4)]
        for i in range(0, len(words), 8):
            out.append("   " + " ".join(f"{w:08x}" for w in words[i:i + 8]))
    if sym_path and vcpu.guest_table:
        out.append("Call trace (frame pointers):")
        out.append(f"   {loc(r['eip'])}")
        out += [f"   {loc(ret, True)}" for ret in frame_chain(
            lambda va, n: dom.copy_from_guest(vcpu, va, n), r["ebp"])]
    return out


def frame_chain(read, ebp: int, depth: int = 16) -> List[int]:
    """Return addresses along the %ebp chain (gcc -fno-omit-frame-pointer):
    [ebp] = caller's ebp, [ebp+4] = return address.  Stops at a frame that
    cannot be read, a zero return address or a chain that does not go up."""
    out = []
    for _ in range(depth):
        fr = read(ebp, 8) if ebp else None
        if not fr or len(fr) < 8:
            break
        nxt, ret = int.from_bytes(fr[:4], "little"), int.from_bytes(fr[4:], "little")
        if not ret:
            break
        out.append(ret)
        if nxt <= ebp:
            break
        ebp = nxt
    return out
