"""HVM configs: xl and xm styles, limits, and the round trip to the daemon."""

import pytest

from qemu_xenpv.config import from_values, parse_config
from qemu_xenpv.errors import ConfigError
from qemu_xenpv.hvm import layout
from qemu_xenpv.hvm.config import HVMConfig


def parse(src, **over):
    return parse_config(src, "/cfg/test.cfg", over)


def test_xl_style_direct_kernel_boot():
    cfg = parse('type = "hvm"\nkernel = "bzImage"\nramdisk = "rd"\ncmdline = "console=ttyS0"\n'
                'vcpus = 4\nmemory = 128\n')
    assert isinstance(cfg, HVMConfig) and cfg.hvm
    assert cfg.guest_kernel == "/cfg/bzImage" and cfg.ramdisk == "/cfg/rd"
    assert cfg.vcpus == 4 and cfg.memory == 128 and cfg.cmdline == "console=ttyS0"
    assert cfg.firmware.endswith("firmware/build/hvmloader.bin")


@pytest.mark.parametrize("builder", ["hvm", "vmx"])
def test_xm_style_names_the_firmware(builder):
    cfg = parse(f'builder = "{builder}"\nkernel = "/usr/lib/xen/boot/hvmloader"\nacpi = 1\n'
                'apic = 1\ndevice_model = "/usr/lib/xen/bin/qemu-dm"\n')
    assert cfg.hvm and cfg.guest_kernel is None
    assert cfg.kernel == "/usr/lib/xen/boot/hvmloader"
    assert not any("'acpi'" in w or "'apic'" in w for w in cfg.warnings)
    assert any("device_model" in w for w in cfg.warnings)
    cfg = parse('builder = "vmx"\nkernel = "/usr/lib/xen/boot/vmxloader"\n')
    assert cfg.guest_kernel is None


@pytest.mark.parametrize("src,match", [
    ('type = "hvm"\nkernel = "k"\nvcpus = 129\n', "at most 128"),
    ('type = "hvm"\nkernel = "k"\nmemory = 8\n', "memory"),
    ('type = "hvm"\nkernel = "k"\nmemory = 4096\n', "memory"),
    ('type = "hvm"\nkernel = "k"\nacpi = 0\n', "ACPI"),
    ('type = "hvm"\nkernel = "k"\nrealmode_entry = "7c00"\n', "CS:IP"),
    ('type = "hvm"\nkernel = "k"\nrealmode_entry = "0x10000:0"\n', "16-bit"),
    ('type = "hvm"\n', "no kernel"),
    ('builder = "hvm"\nkernel = "/x/hvmloader"\nramdisk = "rd"\n', "ramdisk"),
    ('type = "hvm"\nkernel = "k"\nhvm_vcpu_coutn = 3\n', "did you mean"),
])
def test_errors(src, match):
    with pytest.raises(ConfigError, match=match):
        parse(src)


def test_memory_rounded_to_2mib_and_vcpus_limit():
    assert parse('type = "hvm"\nkernel = "k"\nmemory = 33\n').memory == 34
    assert parse('type = "hvm"\nkernel = "k"\nvcpus = 128\n').vcpus == layout.MAX_VCPUS


def test_fault_injection_keys_and_overrides():
    cfg = parse('type = "hvm"\nkernel = "k"\nvcpus = 2\n',
                hvm_vcpu_magic=0x12345678, hvm_vcpu_count=0, realmode_entry="0x0000:0x7c00")
    assert cfg.vcpu_magic == 0x12345678 and cfg.vcpu_count == 0
    assert cfg.realmode_entry == (0, 0x7C00)


def test_round_trip_through_the_daemon():
    cfg = parse('type = "hvm"\nkernel = "k"\nvcpus = 3\nrealmode_entry = "0x07c0:0"\n'
                'on_crash = "preserve"\n', hvm_vcpu_count=7)
    d = cfg.to_dict()
    again = from_values(d, d["source"], "/elsewhere")
    again.kernel, again.ramdisk = d["kernel"], d["ramdisk"]
    assert isinstance(again, HVMConfig)
    for f in ("guest_kernel", "vcpus", "memory", "realmode_entry", "vcpu_count", "vcpu_magic",
              "firmware", "on_crash", "cmdline"):
        assert getattr(again, f) == getattr(cfg, f), f


def test_pv_configs_unchanged():
    cfg = parse('kernel = "k"\n')
    assert not getattr(cfg, "hvm", False)


def test_disks_and_vifs_are_pv_devices_with_a_warning():
    cfg = parse('type = "hvm"\nkernel = "k"\ndisk = ["file:/img/a.img,xvda,w"]\n'
                'vif = ["mac=00:16:3e:00:00:01"]\n')
    assert [d.vdev for d in cfg.disks] == ["xvda"] and len(cfg.vifs) == 1
    assert any("PV devices only" in w for w in cfg.warnings)
    assert cfg.to_dict()["disk"] == [cfg.disks[0].canonical()]
    assert not any("PV devices" in w for w in parse('type = "hvm"\nkernel = "k"\n').warnings)
    with pytest.raises(ConfigError, match="xvda"):
        parse('type = "hvm"\nkernel = "k"\ndisk = ["file:/a,xvda,w", "file:/b,xvda,w"]\n')
