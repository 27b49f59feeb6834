"""Fixtures for the pure-Python unit tests (no QEMU): built artefacts,
scratch guest RAM that is always closed, and a tiny i386 assembler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_ELF = ROOT / "guest-images" / "build" / "demo.elf"
SHIM_ELF = ROOT / "firmware" / "build" / "shim.elf"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is not built: run 'make' in {ROOT}")
    return path


@pytest.fixture(scope="session")
def demo_elf() -> Path:
    return _need(DEMO_ELF)


@pytest.fixture(scope="session")
def shim_elf() -> Path:
    return _need(SHIM_ELF)


@pytest.fixture
def make_ram():
    """make_ram(size) -> GuestRAM; every RAM made is closed after the test."""
    from qemu_xenpv.machine.ram import GuestRAM
    made = []

    def make(size: int = 4 << 20):
        ram = GuestRAM(size, "qemu-xenpv-unittest")
        made.append(ram)
        return ram
    yield make
    for ram in made:
        ram.close()


@pytest.fixture
def assemble(tmp_path):
    """assemble(source, linker_script=None, name='k', base=0x100000) -> path
    of an i386 ELF built with `gcc -m32 -c` and `ld -m elf_i386`.  Without a
    script: .text at `base`, then the notes, so one image holds them all."""
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("gcc/ld not installed")

    def build(source: str, linker_script: str = None, name: str = "k",
              base: int = 0x100000) -> Path:
        src = tmp_path / f"{name}.S"
        obj = tmp_path / f"{name}.o"
        out = tmp_path / f"{name}.elf"
        src.write_text(source)
        subprocess.run(["gcc", "-m32", "-c", str(src), "-o", str(obj)], check=True,
                       capture_output=True)
        cmd = ["ld", "-m", "elf_i386", "-nostdlib", "-e", "_start", "-o", str(out)]
        if linker_script is None:
            linker_script = (f"ENTRY(_start)\nSECTIONS {{\n  . = {base:#x};\n"
                             "  .text : { *(.text) }\n  .note.Xen : { *(.note.Xen) }\n"
                             "  __xen_guest 0 : { *(__xen_guest) }\n}\n")
        lds = tmp_path / f"{name}.lds"
        lds.write_text(linker_script)
        cmd += ["-T", str(lds)]
        subprocess.run(cmd + [str(obj)], check=True, capture_output=True)
        return out
    return build
