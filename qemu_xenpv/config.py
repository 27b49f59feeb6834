"""Domain configuration files in the xm/xl tradition.

A config file is Python (as xm's were: `vmid` arithmetic in xmexample2
works); `var=value` words on the command line are set before it runs (so
the file's code can use them) and win over the file's own assignments.
Every assigned name is then checked: a variable we implement is used, a
known xl variable we do not implement gives a warning, anything else is an
error (a typo must never be silently ignored) unless the file's own code
uses it as a helper.
"""

from __future__ import annotations

import ast
import difflib
import os
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .errors import ConfigError

MAX_VCPUS = 32
ACTIONS = ("destroy", "restart", "preserve", "rename-restart", "coredump-destroy",
           "coredump-restart", "soft-reset")

IMPLEMENTED = {
    "name": "domain name", "type": "pv or hvm",
    "builder": "linux/generic = PV, hvm/vmx = HVM", "kernel": "PV kernel (ELF with Xen notes)",
    "ramdisk": "initial ramdisk", "memory": "MiB of RAM", "maxmem": "MiB maximum",
    "vcpus": "number of vCPUs", "maxvcpus": "maximum vCPUs", "cmdline": "kernel command line",
    "extra": "appended to the command line", "root": "root= on the command line",
    "on_poweroff": "action", "on_reboot": "action", "on_crash": "action",
    "uuid": "domain UUID", "loader": "'generic' only",
    "max_event_channels": "accepted; the 2-level ABI has 1024 ports",
    "disk": "virtual disks (devices/storage.py: 'file:/img,xvda,w', xl's key=value form)",
    "vif": "network interfaces (devices/netback.py: 'mac=00:16:3e:..,bridge=NAME,ip=A.B.C.D')",
}
# HVM domains (qemu_xenpv/hvm): their own variables
from .hvm.keys import HVM_KEYS  # noqa: E402
IMPLEMENTED.update(HVM_KEYS)
# xl.cfg / xm variables we know and do not implement (yet): a warning each
KNOWN_UNIMPLEMENTED = {
    "pci", "vfb", "vkb", "vtpm", "usb", "usbctrl", "usbdev", "channel",
    "p9", "vdispl", "vsnd", "connectors", "cpus", "cpus_soft", "cpu_weight", "cap",
    "localtime", "rtc_timeoffset", "on_watchdog", "on_soft_reset", "vnc", "vnclisten",
    "vncpasswd", "vncdisplay", "sdl", "serial", "boot", "acpi", "apic", "pae", "hap",
    "nestedhvm", "viridian", "device_model_version", "device_model_override", "stdvga",
    "videoram", "e820_host", "seclabel", "init_seclabel", "pool", "driver_domain",
    "device_tree", "iomem", "ioports", "irqs", "claim_mode", "tsc_mode", "gfx_passthru",
    "nic", "nics", "ip", "netmask", "gateway", "hostname", "dhcp", "nfs_server", "nfs_root",
    "restart", "cpu", "console", "bootloader", "bootloader_args", "xen_platform_pci",
    "max_grant_frames", "max_maptrack_frames", "vcpu_hard_affinity", "vcpu_soft_affinity",
    "shadow_memory", "altp2m", "vpmu", "dm_restrict", "soundhw", "passthrough",
}


@dataclass
class DomainConfig:
    name: str
    kernel: str
    memory: int = 128
    maxmem: Optional[int] = None
    vcpus: int = 1
    cmdline: str = ""
    ramdisk: Optional[str] = None
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    uuid: Optional[uuidlib.UUID] = None
    scramble_p2m: bool = False
    source: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    kernel_image: Any = None
    ramdisk_bytes: Optional[bytes] = None
    disks: List[Any] = field(default_factory=list)     # devices.storage.DiskSpec
    vifs: List[Dict[str, str]] = field(default_factory=list)   # devices.netback.parse_vif

    def load_images(self) -> None:
        """Read the kernel (and ramdisk): every image error is found here."""
        from .image import load_kernel
        self.kernel_image = load_kernel(self.kernel)
        if self.ramdisk:
            try:
                with open(self.ramdisk, "rb") as f:
                    self.ramdisk_bytes = f.read()
            except OSError as e:
                raise ConfigError(f"ramdisk '{self.ramdisk}': {e.strerror}") from None

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "kernel": self.kernel, "memory": self.memory,
                "maxmem": self.maxmem, "vcpus": self.vcpus, "cmdline": self.cmdline,
                "ramdisk": self.ramdisk, "on_poweroff": self.on_poweroff,
                "on_reboot": self.on_reboot, "on_crash": self.on_crash,
                "uuid": str(self.uuid) if self.uuid else None,
                "scramble_p2m": self.scramble_p2m, "source": self.source,
                "disk": [d.canonical() for d in self.disks],
                "vif": [_format_vif(v) for v in self.vifs]}


def _format_vif(v: Dict[str, str]) -> str:
    from qemu_xenpv.devices.netback import format_vif
    return format_vif(v)


def _parse_value(text: str) -> Any:
    """A command-line value: a Python literal if it is one, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(words: List[str]) -> Dict[str, Any]:
    out = {}
    for w in words:
        if "=" not in w:
            raise ConfigError(f"'{w}': expected var=value")
        k, v = w.split("=", 1)
        if not k.isidentifier():
            raise ConfigError(f"'{k}' is not a valid variable name")
        out[k] = _parse_value(v)
    return out


def _loaded_names(code) -> set:
    names = set(code.co_names) | set(code.co_varnames)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _loaded_names(const)
    return names


def _reads(tree: ast.AST) -> set:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def load_config_file(path: str, overrides: Optional[Dict[str, Any]] = None) -> DomainConfig:
    if not os.path.exists(path):
        raise ConfigError(f"config file '{path}' not found")
    try:
        with open(path, "r") as f:
            src = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file '{path}': cannot read it ({e})") from None
    return parse_config(src, path, overrides or {})


def parse_config(src: str, path: str = "<config>", overrides: Optional[Dict[str, Any]] = None,
                 base_dir: Optional[str] = None) -> DomainConfig:
    overrides = dict(overrides or {})
    try:
        tree = ast.parse(src, filename=path)
        code = compile(tree, path, "exec")
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    ns: Dict[str, Any] = dict(overrides)
    safe_builtins = {k: __builtins__[k] if isinstance(__builtins__, dict) else getattr(__builtins__, k)
                     for k in ("int", "str", "len", "range", "list", "dict", "min", "max",
                               "bool", "float", "True", "False", "None", "abs", "sorted",
                               "__import__")}
    ns["__builtins__"] = safe_builtins
    try:
        exec(code, ns)
    except ConfigError:
        raise
    except Exception as e:
        line = getattr(e, "lineno", None) or _exc_line(e, path)
        where = f"{path}:{line}" if line else path
        raise ConfigError(f"{where}: {type(e).__name__}: {e}") from None
    ns.pop("__builtins__", None)
    ns.update(overrides)            # as xl: a var=value word overrides the file
    used_by_code = _reads(tree)
    values = {k: v for k, v in ns.items() if not k.startswith("_") and
              not callable(v) and type(v).__name__ != "module"}
    warnings = []
    for k in values:
        if k in IMPLEMENTED:
            continue
        if k in KNOWN_UNIMPLEMENTED:
            warnings.append(f"config variable '{k}' is not implemented by qemu-xenpv yet: ignored")
            continue
        if k in used_by_code:
            continue                        # a helper variable of the file's own code
        hint = difflib.get_close_matches(k, list(IMPLEMENTED) + sorted(KNOWN_UNIMPLEMENTED), 1)
        raise ConfigError(f"{path}: unknown config variable '{k}'" +
                          (f" (did you mean '{hint[0]}'?)" if hint else ""))
    base = base_dir if base_dir is not None else (
        os.path.dirname(os.path.abspath(path)) if path and not path.startswith("<") else os.getcwd())
    return from_values(values, path, base, warnings)


def _exc_line(e: Exception, path: str) -> Optional[int]:
    tb = e.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _resolve(p: str, base: str) -> str:
    p = os.path.expanduser(p)
    if os.path.isabs(p):
        return p
    cand = os.path.join(base, p)
    if os.path.exists(cand) or not os.path.exists(p):
        return cand
    return os.path.abspath(p)


def _int(values, key, path, lo=None) -> Optional[int]:
    v = values.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ConfigError(f"{path}: {key} must be an integer, not {v!r}")
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(f"{path}: {key} must be an integer, not {v!r}") from None
    if lo is not None and n < lo:
        raise ConfigError(f"{path}: {key} = {n} is too small (at least {lo})")
    return n


def from_values(values: Dict[str, Any], path: str = "<config>", base: Optional[str] = None,
                warnings: Optional[List[str]] = None) -> DomainConfig:
    base = base or os.getcwd()
    typ = values.get("type")
    builder = values.get("builder")
    from .hvm.config import is_hvm, hvm_from_values     # HVM: its own builder
    if is_hvm(values):
        return hvm_from_values(values, path, base, warnings)
    if typ not in (None, "pv") or builder not in (None, "linux", "generic"):
        what = typ or builder
        if what in ("hvm",):
            raise ConfigError(f"{path}: type/builder '{what}' (HVM) is not supported by this "
                              "version yet")
        raise ConfigError(f"{path}: unknown guest type '{what}' (use type = \"pv\")")
    loader = values.get("loader")
    if loader not in (None, "generic"):
        raise ConfigError(f"{path}: loader '{loader}' is not supported (only 'generic')")
    kernel = values.get("kernel")
    if not kernel or not isinstance(kernel, str):
        raise ConfigError(f"{path}: no kernel given (kernel = \"/path/to/xen-pv-kernel\")")
    name = values.get("name")
    if not name or not isinstance(name, str):
        name = os.path.splitext(os.path.basename(path))[0] if not path.startswith("<") else "domU"
    if not all(c.isalnum() or c in "-_.~+:@" for c in name) or name.isdigit():
        raise ConfigError(f"{path}: name '{name}' may only contain letters, digits and "
                          "'-_.~+:@', and may not be a number")
    memory = _int(values, "memory", path, lo=1)
    maxmem = _int(values, "maxmem", path, lo=1)
    vcpus = _int(values, "vcpus", path, lo=1) or 1
    if vcpus > MAX_VCPUS:
        raise ConfigError(f"{path}: vcpus = {vcpus}: at most {MAX_VCPUS}")
    mev = _int(values, "max_event_channels", path, lo=1)
    cmdline = values.get("cmdline") or ""
    if values.get("root"):
        cmdline = f"root={values['root']} {cmdline}".strip()
    if values.get("extra"):
        cmdline = f"{cmdline} {values['extra']}".strip()
    if not isinstance(cmdline, str):
        raise ConfigError(f"{path}: cmdline must be a string")
    cfg = DomainConfig(name=name, kernel=_resolve(kernel, base), memory=memory or 128,
                       maxmem=maxmem, vcpus=vcpus, cmdline=cmdline, source=path,
                       warnings=list(warnings or []))
    if values.get("ramdisk"):
        cfg.ramdisk = _resolve(str(values["ramdisk"]), base)
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        if key in values:
            v = values[key]
            if v not in ACTIONS:
                raise ConfigError(f"{path}: {key} = {v!r}: expected one of {', '.join(ACTIONS)}")
            setattr(cfg, key, v)
    if values.get("uuid"):
        try:
            cfg.uuid = uuidlib.UUID(str(values["uuid"]))
        except ValueError:
            raise ConfigError(f"{path}: uuid {values['uuid']!r} is not a UUID") from None
    if values.get("disk") is not None:
        from qemu_xenpv.devices.storage import parse_disk_list
        cfg.disks = parse_disk_list(values["disk"], path, base)
    if values.get("vif") is not None:
        from qemu_xenpv.devices.netback import parse_vifs
        cfg.vifs = parse_vifs(values["vif"], path, base, cfg.warnings)
    if mev is not None and mev > 1024:
        cfg.warnings.append(f"max_event_channels = {mev}: the 2-level ABI offers 1024 ports")
    return cfg
