"""Domain configuration files (qemu_xenpv.config): xm/xl syntax, command
line overrides, path resolution and every kind of user mistake."""

from __future__ import annotations

import os
import uuid

import pytest

from qemu_xenpv.config import (ACTIONS, ConfigError, load_config_file, parse_config,
                               parse_overrides)
from qemu_xenpv.errors import ImageError, XenPVError

P = "/cfgdir/dom.cfg"


def parse(src, **kw):
    return parse_config(src, kw.pop("path", P), **kw)


# ---- valid files ---------------------------------------------------------------
def test_minimal():
    cfg = parse('kernel = "/boot/k.elf"\n')
    assert cfg.kernel == "/boot/k.elf"
    assert cfg.name == "dom"                    # from the file name
    assert (cfg.memory, cfg.vcpus, cfg.cmdline) == (128, 1, "")
    assert (cfg.on_poweroff, cfg.on_reboot, cfg.on_crash) == ("destroy", "restart", "destroy")
    assert cfg.warnings == []
    assert cfg.source == P


def test_xmexample2_arithmetic():
    src = (
        "# xmexample2: one file for many domains, vmid set on the command line\n"
        'kernel = "/boot/vmlinuz-xenU"\n'
        "memory = 64 + 16 * vmid\n"
        'name = "VM%d" % vmid\n'
        'root = "/dev/sda%d ro" % (7 + vmid)\n'
        'extra = "ip=10.0.%d.1" % vmid\n'
        'disk = ["phy:sda%d,sda1,w" % (7 + vmid)]\n'
    )
    cfg = parse(src, overrides=parse_overrides(["vmid=3"]))
    assert cfg.name == "VM3"
    assert cfg.memory == 112
    assert cfg.cmdline == "root=/dev/sda10 ro ip=10.0.3.1"
    assert [(d.vdev, d.devid, d.access, d.backendtype) for d in cfg.disks] == \
        [("sda1", 2049, "w", "phy")]
    assert cfg.disks[0].target.endswith("/sda10")


def test_helper_variables_allowed_if_used():
    cfg = parse('base = 8\nkernel = "/k"\nmemory = base * 4\n')
    assert cfg.memory == 32


def test_python_constructs():
    src = ('kernel = "/k"\n'
           'parts = ["console=hvc0", "loglevel=%d" % max(3, 7)]\n'
           'cmdline = " ".join(parts)\n'
           'memory = int("48") if True else 0\n')
    cfg = parse(src)
    assert cfg.cmdline == "console=hvc0 loglevel=7"
    assert cfg.memory == 48


def test_xtf_style_config():
    src = ('name="test-pv32pae-selftest"\n'
           'vcpus=1\n'
           'type="pv"\n'
           'loader="generic"\n'
           'memory=128\n'
           'kernel="/usr/libexec/xtf/tests/selftest/test-pv32pae-selftest"\n'
           'cmdline="hypercall"\n'
           'max_event_channels=4096\n')
    cfg = parse(src)
    assert cfg.name == "test-pv32pae-selftest"
    assert cfg.kernel == "/usr/libexec/xtf/tests/selftest/test-pv32pae-selftest"
    assert (cfg.memory, cfg.vcpus, cfg.cmdline) == (128, 1, "hypercall")


def test_memory_as_string_number():
    assert parse('kernel="/k"\nmemory="64"\n').memory == 64


def test_uuid():
    u = "6c5c0c1e-3f7c-4a5b-9d1e-0123456789ab"
    assert parse(f'kernel="/k"\nuuid="{u}"\n').uuid == uuid.UUID(u)
    with pytest.raises(ConfigError, match="UUID"):
        parse('kernel="/k"\nuuid="not-a-uuid"\n')


def test_to_dict():
    d = parse('kernel="/k"\nmemory=16\nname="x"\n').to_dict()
    assert d["name"] == "x" and d["memory"] == 16 and d["kernel"] == "/k"
    assert set(d) >= {"name", "kernel", "memory", "vcpus", "cmdline", "on_crash", "uuid"}


@pytest.mark.parametrize("action", ACTIONS)
def test_actions_accepted(action):
    cfg = parse(f'kernel="/k"\non_crash="{action}"\non_reboot="{action}"\n'
                f'on_poweroff="{action}"\n')
    assert cfg.on_crash == cfg.on_reboot == cfg.on_poweroff == action


# ---- overrides ---------------------------------------------------------------------
def test_parse_overrides():
    o = parse_overrides(["memory=64", "name=web1", "cmdline='a b'", "kernel=/boot/k",
                         "vmid=2", "disk=['phy:a,b,w']", "empty="])
    assert o == {"memory": 64, "name": "web1", "cmdline": "a b", "kernel": "/boot/k",
                 "vmid": 2, "disk": ["phy:a,b,w"], "empty": ""}


@pytest.mark.parametrize("word", ["memory", "1abc=2", "a-b=3", "=5"])
def test_parse_overrides_errors(word):
    with pytest.raises(ConfigError):
        parse_overrides([word])


def test_override_wins_over_file():
    cfg = parse('kernel="/k"\nmemory=64\nname="a"\n',
                overrides=parse_overrides(["memory=256", "name=b"]))
    assert cfg.memory == 256 and cfg.name == "b"


def test_override_alone():
    cfg = parse('kernel="/k"\n', overrides={"memory": 24, "cmdline": "x"})
    assert cfg.memory == 24 and cfg.cmdline == "x"


def test_override_typo_is_an_error():
    with pytest.raises(ConfigError, match="memroy.*did you mean 'memory'"):
        parse('kernel="/k"\n', overrides=parse_overrides(["memroy=64"]))


# ---- paths -----------------------------------------------------------------------------
def test_relative_kernel_resolved_against_config_dir(tmp_path, monkeypatch):
    d = tmp_path / "configs"
    d.mkdir()
    (d / "k.elf").write_bytes(b"")
    cfgfile = d / "dom.cfg"
    cfgfile.write_text('kernel = "k.elf"\nramdisk = "../rd.img"\nmemory = 16\n')
    monkeypatch.chdir("/")
    cfg = load_config_file(str(cfgfile))
    assert cfg.kernel == str(d / "k.elf")
    assert os.path.normpath(cfg.ramdisk) == str(tmp_path / "rd.img")
    assert cfg.source == str(cfgfile)


def test_relative_kernel_relative_config(tmp_path, monkeypatch):
    d = tmp_path / "configs"
    d.mkdir()
    (d / "dom.cfg").write_text('kernel = "build/k.elf"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config_file("configs/dom.cfg")
    assert cfg.kernel == str(d / "build" / "k.elf")


def test_absolute_and_home_paths(monkeypatch):
    monkeypatch.setenv("HOME", "/home/tester")
    assert parse('kernel="/abs/k"\n').kernel == "/abs/k"
    assert parse('kernel="~/k.elf"\n').kernel == "/home/tester/k.elf"


def test_base_dir_argument():
    cfg = parse_config('kernel="k"\n', "<string>", base_dir="/somewhere")
    assert cfg.kernel == "/somewhere/k"
    assert cfg.name == "domU"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(str(tmp_path / "nope.cfg"))


# ---- mistakes --------------------------------------------------------------------------
def test_unknown_variable_with_hint():
    with pytest.raises(ConfigError) as ei:
        parse('kernel="/k"\nmemroy = 64\n')
    msg = str(ei.value)
    assert "unknown config variable 'memroy'" in msg
    assert "did you mean 'memory'?" in msg
    assert P in msg
    assert "\n" not in msg


def test_unknown_variable_without_hint():
    with pytest.raises(ConfigError, match="unknown config variable 'zzzqqq'") as ei:
        parse('kernel="/k"\nzzzqqq = 1\n')
    assert "did you mean" not in str(ei.value)


@pytest.mark.parametrize("var,value", [("vfb", "['vnc=1']"),
                                       ("pci", "[]"), ("vnc", "1"), ("serial", "'pty'")])
def test_known_unimplemented_warns(var, value):
    cfg = parse(f'kernel="/k"\n{var} = {value}\n')
    assert len(cfg.warnings) == 1
    assert f"'{var}'" in cfg.warnings[0] and "not implemented" in cfg.warnings[0]


def test_syntax_error_has_file_and_line():
    with pytest.raises(ConfigError) as ei:
        parse('kernel = "/k"\n\nmemory = = 3\n')
    assert str(ei.value).startswith(f"{P}:3:")
    assert "syntax" in str(ei.value)


def test_runtime_error_has_file_and_line():
    with pytest.raises(ConfigError) as ei:
        parse('kernel = "/k"\nx = 1\nmemory = 64 / (x - 1)\n')
    assert str(ei.value).startswith(f"{P}:3:")
    assert "ZeroDivisionError" in str(ei.value)


def test_undefined_name_is_a_config_error():
    with pytest.raises(ConfigError, match="vmid"):
        parse('kernel = "/k"\nname = "VM%d" % vmid\n')


@pytest.mark.parametrize("value", ['"lots"', "[64]", "True", "64.5", "None + 1"])
def test_bad_memory_type(value):
    with pytest.raises(ConfigError):
        parse(f'kernel="/k"\nmemory = {value}\n')


def test_memory_message():
    with pytest.raises(ConfigError, match="memory must be an integer, not 'lots'"):
        parse('kernel="/k"\nmemory = "lots"\n')


@pytest.mark.parametrize("src", ['memory = 0', 'memory = -5', 'vcpus = 0', 'maxmem = 0'])
def test_too_small(src):
    with pytest.raises(ConfigError, match="too small"):
        parse(f'kernel="/k"\n{src}\n')


def test_on_crash_checked():
    with pytest.raises(ConfigError) as ei:
        parse('kernel="/k"\non_crash = "explode"\n')
    assert "on_crash" in str(ei.value) and "destroy" in str(ei.value)
    with pytest.raises(ConfigError, match="on_reboot"):
        parse('kernel="/k"\non_reboot = "Restart"\n')


def test_vcpus_limits():
    assert parse('kernel="/k"\nvcpus = 2\n').vcpus == 2
    assert parse('kernel="/k"\nvcpus = 1\n').vcpus == 1
    with pytest.raises(ConfigError, match="vcpus"):
        parse('kernel="/k"\nvcpus = 33\n')
    with pytest.raises(ConfigError, match="vcpus"):
        parse('kernel="/k"\nvcpus = 0\n')


def test_type_hvm_is_error_or_accepted():
    """Another engineer is adding HVM: either a clean ConfigError or a config."""
    for src in ('type = "hvm"\nkernel = "/k"\n', 'builder = "hvm"\nkernel = "/k"\n'):
        try:
            cfg = parse(src)
        except ConfigError as e:
            assert str(e)
        else:
            assert cfg is not None


def test_type_pv_and_unknown_type():
    assert parse('type = "pv"\nkernel = "/k"\n').kernel == "/k"
    assert parse('builder = "linux"\nkernel = "/k"\n').kernel == "/k"
    assert parse('builder = "generic"\nkernel = "/k"\n').kernel == "/k"
    with pytest.raises(ConfigError, match="frobnicate"):
        parse('type = "frobnicate"\nkernel = "/k"\n')


def test_loader():
    assert parse('loader = "generic"\nkernel = "/k"\n').kernel == "/k"
    with pytest.raises(ConfigError, match="loader"):
        parse('loader = "pygrub"\nkernel = "/k"\n')


@pytest.mark.parametrize("src", ['memory = 64\n', 'kernel = ""\n', 'kernel = 5\n'])
def test_kernel_required(src):
    with pytest.raises(ConfigError, match="kernel"):
        parse(src)


@pytest.mark.parametrize("name", ["has space", "slash/name", "semi;colon"])
def test_bad_name(name):
    with pytest.raises(ConfigError, match="name"):
        parse(f'kernel="/k"\nname = "{name}"\n')


def test_cmdline_must_be_string():
    with pytest.raises(ConfigError, match="cmdline"):
        parse('kernel="/k"\ncmdline = 5\n')


def test_errors_are_user_errors():
    assert issubclass(ConfigError, XenPVError)


def test_load_images_missing_kernel(tmp_path):
    cfg = parse('kernel = "missing.elf"\n', path=str(tmp_path / "d.cfg"))
    with pytest.raises(ImageError, match="not found"):
        cfg.load_images()


def test_load_images_missing_ramdisk(tmp_path, demo_elf):
    cfg = parse(f'kernel = "{demo_elf}"\nramdisk = "nope.img"\n', path=str(tmp_path / "d.cfg"))
    with pytest.raises(ConfigError, match="ramdisk"):
        cfg.load_images()


def test_load_images_demo(demo_elf):
    cfg = parse(f'kernel = "{demo_elf}"\nmemory = 32\n')
    cfg.load_images()
    assert cfg.kernel_image.is_pae and cfg.ramdisk_bytes is None
