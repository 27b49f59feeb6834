"""Fallible users: each mistake is one line on stderr, a non-zero exit, no
traceback, no QEMU left running and nothing left in /dev/shm."""

import os
from pathlib import Path

import pytest

from conftest import ROOT, GUESTS, qemu_pids


def shm():
    return set(os.listdir("/dev/shm"))


def write_cfg(tmp_path, body: str) -> Path:
    p = tmp_path / "guest.cfg"
    p.write_text(body)
    return p


CASES = {
    "missing kernel": ('kernel = "/nonexistent/vmlinuz"\nmemory = 32\n', "not found"),
    "not an ELF": ('kernel = "{tmp}/not-elf"\nmemory = 32\n', "not an ELF"),
    "ELF without Xen notes": (f'kernel = "{ROOT}/firmware/build/shim.elf"\nmemory = 32\n',
                              "no Xen ELF notes"),
    "64-bit ELF": ('kernel = "/bin/ls"\nmemory = 32\n', "64-bit"),
    "memory too small": (f'kernel = "{GUESTS}/build/demo.elf"\nmemory = 1\n', "too small"),
    "unknown variable": (f'kernel = "{GUESTS}/build/demo.elf"\nmemroy = 32\n',
                         "unknown config variable 'memroy'"),
    "syntax error": (f'kernel = "{GUESTS}/build/demo.elf"\nmemory = = 32\n', "syntax error"),
    "bad value": (f'kernel = "{GUESTS}/build/demo.elf"\nmemory = "lots"\n', "memory"),
    "missing config": (None, "not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(xenpv, tmp_path, case):
    body, expect = CASES[case]
    (tmp_path / "not-elf").write_text("this is not a kernel\n")
    cfg = write_cfg(tmp_path, body.format(tmp=tmp_path)) if body else tmp_path / "nope.cfg"
    before = shm()
    r = xenpv.run("create", "-c", cfg, f"name={xenpv.name()}")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("qemu-xenpv: error:"), r.stderr
    assert expect in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not qemu_pids(xenpv.tag)
    assert shm() - before == set()


def test_qemu_not_on_path(xenpv):
    env = dict(xenpv.env, PATH="/nonexistent-bin")
    before = shm()
    r = xenpv.run("create", "-c", GUESTS / "demo.cfg", f"name={xenpv.name()}", env=env)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "qemu-system-i386 not found on PATH" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not qemu_pids(xenpv.tag)
    assert shm() - before == set()


def test_unknown_domain(xenpv):
    name = xenpv.name()
    assert xenpv.run("create", GUESTS / "demo.cfg", f"name={name}").returncode == 0
    r = xenpv.run("destroy", "no-such-domain")
    assert r.returncode != 0
    assert r.stderr.strip() == "qemu-xenpv: error: domain 'no-such-domain' does not exist"
    assert xenpv.run("destroy", name).returncode == 0


def test_duplicate_name(xenpv):
    name = xenpv.name()
    assert xenpv.run("create", GUESTS / "demo.cfg", f"name={name}").returncode == 0
    r = xenpv.run("create", GUESTS / "demo.cfg", f"name={name}")
    assert r.returncode != 0 and "already exists" in r.stderr
    assert len(qemu_pids(xenpv.tag)) == 1
    assert xenpv.run("destroy", name).returncode == 0
