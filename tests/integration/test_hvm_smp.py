"""The HVM firmware path end to end: hvmloader builds the ACPI tables,
applies the seed's MADT update from the vCPU block at 0x9F800, starts the
hvm-smp guest, which finds the RSDP by the ACPI search rules, validates
every checksum, counts the MADT's local APICs and starts each AP with
INIT-SIPI-SIPI.  Each test boots real QEMU."""

import re

import pytest

from pathlib import Path
import importlib.util

# tests/conftest.py's helpers, by path: `from conftest import` picks
# tests/unit/conftest.py when unit and integration tests run together
_spec = importlib.util.spec_from_file_location(
    "qemu_xenpv_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
GUESTS, qemu_pids = _conftest.GUESTS, _conftest.qemu_pids

SMP_CFG = GUESTS / "hvm-smp.cfg"
REAL_CFG = GUESTS / "hvm-real.cfg"


def need(path):
    if not path.exists():
        pytest.fail(f"{path} is not built: run 'make'")


def boot(xenpv, cfg, *overrides, timeout=90):
    need(GUESTS / "build" / "hvm-smp.elf")
    name = xenpv.name("hvm")
    r = xenpv.run("create", "-c", cfg, f"name={name}", *overrides, timeout=timeout)
    out = r.stdout
    assert not qemu_pids(xenpv.tag), "QEMU still running after the guest powered off"
    return r, out


def smp_result(out):
    m = re.search(r"hvm-smp: (\d+) CPU\(s\) in the MADT, (\d+) online", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("vcpus", [1, 2, 4, 128])
def test_madt_lists_each_vcpu_and_each_ap_starts(xenpv, vcpus):
    r, out = boot(xenpv, SMP_CFG, f"vcpus={vcpus}")
    assert r.returncode == 0, r.stderr + out
    assert "Loading ACPI ..." in out
    assert f"MADT: {vcpus} local APIC(s), {vcpus} CPU(s) present" in out
    assert "Bad vcpus" not in out
    assert "found in 0xE0000-0xFFFFF" in out                  # the ACPI search, not the pointer
    assert "checksums ok: RSDP RSDT XSDT FACP APIC DSDT" in out
    assert smp_result(out) == (vcpus, vcpus)
    ids = sorted(int(m) for m in re.findall(r"AP \d+ online: APIC id (\d+)", out))
    assert ids == list(range(1, vcpus))
    # seed layout: 44-byte header, IO-APIC, ISOs and LINT NMI, then 8 bytes per LAPIC
    assert f"MADT: length {112 + 8 * vcpus}," in out
    assert "Test result: SUCCESS" in out


@pytest.mark.parametrize("override,message", [
    ("hvm_vcpu_magic=0x12345678", "Bad vcpus magic, set vcpu number=1"),
    ("hvm_vcpu_count=0", "Bad vcpus number 0, set vcpu number=1"),
    ("hvm_vcpu_count=129", "Bad vcpus number 129 (maximum 128), set vcpu number=1"),
    ("hvm_vcpu_count=3", "Bad vcpus number 3 (the machine has 2 CPUs), set vcpu number=1"),
])
def test_corrupt_vcpu_block_falls_back_to_one(xenpv, override, message):
    r, out = boot(xenpv, SMP_CFG, "vcpus=2", override)
    assert r.returncode == 0, r.stderr + out
    assert f"hvmloader: {message}" in out
    assert "MADT: 1 local APIC(s), 2 CPU(s) present" in out
    # never a broken table: the guest still validates everything
    assert "checksums ok: RSDP RSDT XSDT FACP APIC DSDT" in out
    assert smp_result(out) == (1, 1)
    assert "Test result: SUCCESS" in out


def test_loader_messages_reach_the_hypervisor_log(xenpv):
    r, out = boot(xenpv, SMP_CFG, "vcpus=2", "hvm_vcpu_magic=0")
    dmesg = xenpv.run("dmesg").stdout
    assert "hvmloader: Bad vcpus magic, set vcpu number=1" in dmesg
    assert re.search(r"HVM build: 32 MiB, 2 vCPU\(s\), vCPU block 0x00000000/2 at 0x9f800", dmesg)
    assert "shutdown: poweroff" in dmesg


def test_xm_style_config_runs_the_loader_alone(xenpv, tmp_path):
    cfg = tmp_path / "xm.cfg"
    cfg.write_text("builder = 'hvm'\nkernel = '/usr/lib/xen/boot/hvmloader'\nmemory = 32\n"
                   "vcpus = 3\nacpi = 1\napic = 1\n")
    r, out = boot(xenpv, cfg)
    assert r.returncode == 0, r.stderr + out
    assert "MADT: 3 local APIC(s), 3 CPU(s) present" in out
    assert "no guest kernel to start (disk boot is not supported): powering off" in out


def test_real_mode_start(xenpv):
    need(GUESTS / "build" / "hvm-real.bin")
    r, out = boot(xenpv, REAL_CFG)
    assert r.returncode == 0, r.stderr + out
    assert "hvmloader: starting real mode at 0000:7c00" in out
    assert "hvm-real: hello from 16-bit real mode" in out
    assert "entered at CS 0000, DL 80, MSW 0010 (real mode)" in out
    assert "Test result: SUCCESS" in out


def test_guest_panic_is_a_crash(xenpv, tmp_path):
    """A guest that cannot power off signals pvpanic: exit status 2."""
    img = tmp_path / "panic.bin"
    # mov $0x505,%dx; mov $1,%al; out %al,(%dx); hlt
    img.write_bytes(bytes.fromhex("ba0505b001eef4"))
    cfg = tmp_path / "panic.cfg"
    cfg.write_text(f"type = 'hvm'\nkernel = '{img}'\nrealmode_entry = '0x0000:0x7c00'\n"
                   "memory = 16\n")
    r, out = boot(xenpv, cfg)
    assert r.returncode == 2, r.stderr + out
    assert "crashed" in r.stderr


def test_errors_are_one_line(xenpv, tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"type = 'hvm'\nkernel = '{GUESTS / 'build' / 'demo.elf'}'\n")
    r = xenpv.run("create", cfg)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "without a PVH entry" in r.stderr
    r = xenpv.run("create", SMP_CFG, "vcpus=200")
    assert r.returncode == 1 and "at most 128" in r.stderr


def test_list_pause_unpause_destroy(xenpv, tmp_path):
    img = tmp_path / "spin.bin"
    img.write_bytes(bytes.fromhex("ebfe"))                  # jmp $
    cfg = tmp_path / "spin.cfg"
    cfg.write_text(f"type = 'hvm'\nkernel = '{img}'\nrealmode_entry = '0x0000:0x7c00'\n"
                   "memory = 16\nvcpus = 3\n")
    name = xenpv.name("spin")
    r = xenpv.run("create", cfg, f"name={name}")
    assert r.returncode == 0, r.stderr
    row = next(l for l in xenpv.run("list").stdout.splitlines() if l.startswith(name))
    assert row.split()[3] == "3" and row.split()[4] == "r-----"
    assert xenpv.run("pause", name).returncode == 0
    row = next(l for l in xenpv.run("list").stdout.splitlines() if l.startswith(name))
    assert row.split()[4] == "--p---"
    assert xenpv.run("unpause", name).returncode == 0
    r = xenpv.run("shutdown", name)                    # this guest ignores the button
    assert r.returncode == 0 and "ACPI power button" in r.stderr, r.stderr
    r = xenpv.run("reboot", name)
    assert r.returncode == 1 and "need PV drivers" in r.stderr, r.stderr
    assert xenpv.run("destroy", name).returncode == 0
    assert name not in xenpv.run("list").stdout
    assert not qemu_pids(xenpv.tag)


def test_reset_is_a_reboot_and_on_reboot_applies(xenpv, tmp_path):
    img = tmp_path / "reset.bin"
    img.write_bytes(bytes.fromhex("b006baf90ceef4"))       # PIIX3 reset control: hard reset
    cfg = tmp_path / "reset.cfg"
    cfg.write_text(f"type = 'hvm'\nkernel = '{img}'\nrealmode_entry = '0x0000:0x7c00'\n"
                   "memory = 16\n")
    r = xenpv.run("create", "-c", cfg, f"name={xenpv.name('once')}", "on_reboot='destroy'")
    assert r.returncode == 0 and "the guest ended: reboot" in r.stderr, r.stderr
    name = xenpv.name("loop")
    assert xenpv.run("create", cfg, f"name={name}").returncode == 0      # on_reboot = restart
    import time
    deadline = time.time() + 30
    while xenpv.run("dmesg").stdout.count("rebooting") < 2 and time.time() < deadline:
        time.sleep(0.2)
    dmesg = xenpv.run("dmesg").stdout
    assert dmesg.count("rebooting") >= 2, dmesg
    assert xenpv.run("destroy", name).returncode == 0
    assert not qemu_pids(xenpv.tag)
