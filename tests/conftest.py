"""Shared test fixtures: each test gets its own qemu-xenpv run directory
(its own daemon), and nothing may be left running afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "guest-images"
BIN = Path(sys.executable).parent
XENPV = str(BIN / "qemu-xenpv") if (BIN / "qemu-xenpv").exists() else shutil.which("qemu-xenpv")


def qemu_pids(tag: str):
    """QEMU processes whose command line mentions `tag` (a unique domain name)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"qemu-system-i386") and any(tag.encode() in c for c in cmd):
            out.append(int(p.name))
    return out


class Xenpv:
    """A private qemu-xenpv installation for one test: its run directory,
    environment and a unique domain-name prefix."""

    def __init__(self, rundir: Path):
        self.rundir = rundir
        self.env = dict(os.environ, QEMU_XENPV_RUNDIR=str(rundir),
                        PATH=f"{BIN}:{os.environ.get('PATH', '')}")
        self.tag = "t" + uuid.uuid4().hex[:8]

    def name(self, base: str = "dom") -> str:
        return f"{base}-{self.tag}"

    def run(self, *args, timeout: float = 60, env=None, check: bool = False):
        r = subprocess.run([XENPV, *map(str, args)], env=env or self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"qemu-xenpv {' '.join(map(str, args))} failed: {r.stderr}")
        return r

    def spawn(self, *args, timeout: float = 60, **kw):
        import pexpect
        child = pexpect.spawn(XENPV, [str(a) for a in args], env=self.env, timeout=timeout, **kw)
        child.logfile_read = open(self.rundir / f"pexpect-{len(list(self.rundir.glob('pexpect-*')))}.log", "wb")
        return child

    def daemon_pid(self):
        r = self.run("info", timeout=30)
        for line in r.stdout.splitlines():
            if line.startswith("daemon_pid"):
                return int(line.split(":")[1])
        return None

    def stop(self) -> None:
        sock = self.rundir / "control.sock"
        if sock.exists():
            import json
            import socket
            try:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(5)
                s.connect(str(sock))
                s.sendall(json.dumps({"op": "quit"}).encode() + b"\n")
                s.recv(100)
                s.close()
            except OSError:
                pass
        deadline = time.time() + 10
        while sock.exists() and time.time() < deadline:
            time.sleep(0.05)


@pytest.fixture
def xenpv(request):
    rundir = Path(tempfile.mkdtemp(prefix="xpv-", dir="/tmp"))
    x = Xenpv(rundir)
    # the qemu-xenpv pytest plugin shows this run directory's console and
    # hypervisor logs in the report of a failing test
    try:
        from qemu_xenpv.pytest_plugin import register_run_dir
        register_run_dir(request.node, rundir)
    except ImportError:
        pass
    try:
        yield x
    finally:
        x.stop()
        deadline = time.time() + 10
        while qemu_pids(x.tag) and time.time() < deadline:
            time.sleep(0.05)
        leftover = qemu_pids(x.tag)
        for pid in leftover:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(rundir, ignore_errors=True)
        assert not leftover, f"QEMU processes left running: {leftover}"


def guest(name: str) -> Path:
    p = GUESTS / f"{name}.cfg"
    assert (GUESTS / "build" / f"{name}.elf").exists(), "run 'make' first"
    return p
