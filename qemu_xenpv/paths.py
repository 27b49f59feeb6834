"""Where the built pieces live (the source tree is the installation)."""

from __future__ import annotations

import os
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def firmware_dir() -> Path:
    return Path(os.environ.get("QEMU_XENPV_FIRMWARE", SOURCE_ROOT / "firmware" / "build"))


def shim_elf() -> Path:
    return firmware_dir() / "shim.elf"


def rom_bin() -> Path:
    return firmware_dir() / "rom.bin"


def shim_abi_header() -> Path:
    return SOURCE_ROOT / "firmware" / "shim" / "shim_abi.h"


def guest_images_dir() -> Path:
    return SOURCE_ROOT / "guest-images"


_CODE_ID = None


def code_id() -> str:
    """What code this process runs: a digest of the name, size and mtime of
    every Python module of the package and of the built firmware.  The
    daemon reports its own, so a command can tell that the daemon it
    reached was started before the source or the firmware changed."""
    global _CODE_ID
    if _CODE_ID is None:
        import hashlib
        h = hashlib.sha256()
        files = []
        for sub in ("qemu_xenpv", "devices", "machine"):
            files += sorted((SOURCE_ROOT / sub).rglob("*.py"))
        fw = firmware_dir()
        files += sorted(fw.glob("*.bin")) + sorted(fw.glob("*.elf")) if fw.is_dir() else []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            h.update(f"{f.relative_to(SOURCE_ROOT) if SOURCE_ROOT in f.parents else f}"
                     f":{st.st_size}:{st.st_mtime_ns}\n".encode())
        _CODE_ID = h.hexdigest()[:16]
    return _CODE_ID
