"""HVM domain configuration: xl's `type = "hvm"` and xm's `builder = "hvm"`
(or the seed's `builder = "vmx"`).

Two styles are accepted:

* xl: ``type = "hvm"; kernel = "bzImage"; ramdisk = ...; cmdline = ...``
  (direct kernel boot; the firmware is our hvmloader, or ``firmware =``);
* xm: ``builder = "hvm"; kernel = "/usr/lib/xen/boot/hvmloader"``: the
  kernel names the firmware (any path ending in hvmloader or vmxloader
  means ours).  There is no disk boot, so such a domain runs the loader,
  which builds the ACPI tables, reports and powers off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..config import ACTIONS, DomainConfig, _int, _resolve
from ..errors import ConfigError, ImageError
from . import layout

from .keys import HVM_KEYS  # noqa: F401  (re-exported)

LOADER_NAMES = ("hvmloader", "vmxloader")


def is_hvm(values: Dict[str, Any]) -> bool:
    return values.get("type") == "hvm" or values.get("builder") in ("hvm", "vmx")


def _firmware_path() -> str:
    from .. import paths
    return str(paths.firmware_dir() / "hvmloader.bin")


@dataclass
class HVMConfig(DomainConfig):
    hvm: bool = True
    guest_kernel: Optional[str] = None      # the OS image; None: nothing to boot
    firmware: str = ""
    realmode_entry: Optional[Tuple[int, int]] = None
    vcpu_magic: Optional[int] = None
    vcpu_count: Optional[int] = None
    hvm_image: Any = None

    def load_images(self) -> None:
        from .image import load_hvm_image
        if not os.path.exists(self.firmware):
            if self.firmware == _firmware_path():
                raise ImageError(f"firmware {self.firmware} is not built: run 'make' in the "
                                 "source tree")
            raise ImageError(f"firmware '{self.firmware}' not found")
        if self.guest_kernel:
            self.hvm_image = load_hvm_image(self.guest_kernel, self.realmode_entry)
        if self.ramdisk:
            try:
                with open(self.ramdisk, "rb") as f:
                    self.ramdisk_bytes = f.read()
            except OSError as e:
                raise ConfigError(f"ramdisk '{self.ramdisk}': {e.strerror}") from None

    def to_dict(self) -> Dict[str, Any]:
        d = super().to_dict()
        d.update({"type": "hvm", "firmware": self.firmware,
                  "realmode_entry": "%#06x:%#06x" % self.realmode_entry if self.realmode_entry else None,
                  "hvm_vcpu_magic": self.vcpu_magic, "hvm_vcpu_count": self.vcpu_count})
        return d


def hvm_from_values(values: Dict[str, Any], path: str, base: str,
                    warnings: List[str]) -> HVMConfig:
    warnings = list(warnings or [])
    kernel = values.get("kernel")
    if kernel is not None and not isinstance(kernel, str):
        raise ConfigError(f"{path}: kernel must be a string")
    firmware = values.get("firmware") or values.get("firmware_override")
    guest_kernel = kernel
    if kernel and os.path.basename(kernel) in LOADER_NAMES:
        # xm style: the kernel names the firmware, which is ours
        guest_kernel = None
        if os.path.exists(kernel) and os.path.abspath(kernel) != os.path.abspath(_firmware_path()):
            warnings.append(f"kernel = '{kernel}': using qemu-xenpv's own hvmloader instead")
        firmware = firmware or "hvmloader"
    if not firmware or firmware in LOADER_NAMES:
        firmware = _firmware_path()
    elif not isinstance(firmware, str):
        raise ConfigError(f"{path}: firmware must be a string")
    else:
        firmware = _resolve(firmware, base)
    if not kernel:
        raise ConfigError(f"{path}: no kernel given (kernel = \"bzImage\" for direct boot, or "
                          "kernel = \"/usr/lib/xen/boot/hvmloader\")")
    for key in ("acpi", "apic"):
        if key in values and values[key] not in (1, True, None):
            raise ConfigError(f"{path}: {key} = {values[key]!r}: an HVM domain always has "
                              f"{key.upper()} (the MADT is how its vCPUs are found)")
    # acpi = 1, apic = 1 and pae = 1 are what an HVM domain has: no warning
    warnings = [w for w in warnings if not any(f"'{k}'" in w for k in ("acpi", "apic", "pae"))]
    name = values.get("name")
    if not name or not isinstance(name, str):
        name = os.path.splitext(os.path.basename(path))[0] if not path.startswith("<") else "domU"
    if not all(c.isalnum() or c in "-_.~+:@" for c in name) or name.isdigit():
        raise ConfigError(f"{path}: name '{name}' may only contain letters, digits and "
                          "'-_.~+:@', and may not be a number")
    memory = _int(values, "memory", path, lo=1) or 128
    if not layout.MIN_MEMORY_MB <= memory <= layout.MAX_MEMORY_MB:
        raise ConfigError(f"{path}: memory = {memory}: an HVM domain has "
                          f"{layout.MIN_MEMORY_MB} to {layout.MAX_MEMORY_MB} MiB")
    memory += memory & 1                        # QEMU's RAM file: whole 2 MiB
    vcpus = _int(values, "vcpus", path, lo=1) or 1
    if vcpus > layout.MAX_VCPUS:
        raise ConfigError(f"{path}: vcpus = {vcpus}: an HVM domain has at most "
                          f"{layout.MAX_VCPUS} (HVM_MAX_VCPUS)")
    maxvcpus = _int(values, "maxvcpus", path, lo=1)
    if maxvcpus is not None and maxvcpus != vcpus:
        warnings.append(f"maxvcpus = {maxvcpus}: vCPU hotplug is not implemented; "
                        f"the domain has {vcpus}")
    cmdline = values.get("cmdline") or ""
    if values.get("root"):
        cmdline = f"root={values['root']} {cmdline}".strip()
    if values.get("extra"):
        cmdline = f"{cmdline} {values['extra']}".strip()
    if not isinstance(cmdline, str):
        raise ConfigError(f"{path}: cmdline must be a string")
    rm = values.get("realmode_entry")
    realmode = None
    if rm is not None:
        from .image import parse_cs_ip
        try:
            realmode = parse_cs_ip(rm)
        except ImageError as e:
            raise ConfigError(f"{path}: {e}") from None
    if values.get("device_model"):
        warnings.append("device_model is ignored: QEMU is the device model")
    cfg = HVMConfig(name=name, kernel=_resolve(kernel, base) if guest_kernel else kernel,
                    memory=memory, vcpus=vcpus, cmdline=cmdline, source=path,
                    warnings=warnings, firmware=firmware, realmode_entry=realmode,
                    vcpu_magic=_int(values, "hvm_vcpu_magic", path, lo=0),
                    vcpu_count=_int(values, "hvm_vcpu_count", path, lo=0))
    cfg.guest_kernel = cfg.kernel if guest_kernel else None
    if values.get("ramdisk"):
        if not guest_kernel:
            raise ConfigError(f"{path}: a ramdisk needs a guest kernel to go with it")
        cfg.ramdisk = _resolve(str(values["ramdisk"]), base)
    if values.get("disk") is not None:
        from qemu_xenpv.devices.storage import parse_disk_list
        cfg.disks = parse_disk_list(values["disk"], path, base)
    if values.get("vif") is not None:
        from qemu_xenpv.devices.netback import parse_vifs
        cfg.vifs = parse_vifs(values["vif"], path, base, cfg.warnings)
    if cfg.disks or cfg.vifs:
        cfg.warnings.append("disk/vif of an HVM domain are PV devices only (blkback/netback, "
                            "no emulated disk or NIC): only guests with PV drivers that use "
                            "the XenPVHVM table see them (docs/hvm.md)")
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        if key in values:
            v = values[key]
            if v not in ACTIONS:
                raise ConfigError(f"{path}: {key} = {v!r}: expected one of {', '.join(ACTIONS)}")
            setattr(cfg, key, v)
    if values.get("uuid"):
        import uuid as uuidlib
        try:
            cfg.uuid = uuidlib.UUID(str(values["uuid"]))
        except ValueError:
            raise ConfigError(f"{path}: uuid {values['uuid']!r} is not a UUID") from None
    return cfg
