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
