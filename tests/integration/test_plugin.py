"""The pytest plugin, run as a user runs it (pytest in a subprocess): the
example project passes; under pytest-xdist a failing test's report shows
its guest's console and hypervisor log (with the symbolised crash report of
a crashed guest), guests are torn down, and --xenpv-keep-logs keeps the
logs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import importlib.util
from pathlib import Path

# tests/conftest.py's helpers, by path (a plain `from conftest import` finds
# tests/unit/conftest.py when unit tests are collected first)
_spec = importlib.util.spec_from_file_location(
    "qemu_xenpv_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
GUESTS, ROOT, qemu_pids = _conftest.GUESTS, _conftest.ROOT, _conftest.qemu_pids

TESTS = '''
import pexpect

DEMO = {demo!r}
XTFISH = {xtfish!r}


def test_passes(xen_guest):
    dom = xen_guest(DEMO, name="pass-{tag}")
    dom.console.expect_exact("demo> ")
    dom.console.sendline("echo fine")
    dom.console.expect("fine\\r\\n")


def test_fails_and_shows_the_console(xen_guest):
    dom = xen_guest(DEMO, name="fail-{tag}", memory=16)
    dom.console.expect_exact("demo> ")
    dom.console.sendline("echo marker-{tag}")
    dom.console.expect("marker-{tag}\\r\\n")
    assert dom.xenstore.read("name") == "not this"


def test_crash_report_in_the_log(xen_guest):
    dom = xen_guest(XTFISH, name="crash-{tag}", extra="fault")
    dom.console.expect(pexpect.EOF)
    assert dom.wait(timeout=30).reason == "poweroff"
'''


def pytest_run(args, cwd, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env or os.environ.copy(), capture_output=True, text=True,
                          timeout=timeout)


def test_the_example_project_passes():
    r = pytest_run(["-q", str(ROOT / "examples")], cwd=ROOT / "examples")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


def test_failures_show_guest_logs_under_xdist(tmp_path):
    tag = "p" + uuid.uuid4().hex[:8]
    (tmp_path / "test_guests.py").write_text(TESTS.format(
        demo=str(GUESTS / "demo.cfg"), xtfish=str(GUESTS / "xtfish.cfg"), tag=tag))
    keep = Path(tempfile.mkdtemp(prefix="xpk-", dir="/tmp"))   # short: sockets live there
    env = dict(os.environ, TMPDIR=str(keep))
    try:
        r = pytest_run(["-n", "2", "--xenpv-keep-logs", "-rA", "test_guests.py"],
                       cwd=tmp_path, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "1 passed" in out and "2 failed" in out, out
        # the failing test's report: its guest's console, then the hypervisor log
        fail = out[out.index("test_fails_and_shows_the_console"):]
        assert f"xen guest fail-{tag}-" in fail and ": console" in fail
        assert f"marker-{tag}" in fail and "qemu-xenpv demo guest" in fail
        assert ": hypervisor log" in fail and "created: 16 MiB" in fail
        crash = out[out.index("_ test_crash_report_in_the_log _"):]
        assert "the guest ended: crash" in crash and "xtfish_fault+0x" in crash
        assert "logs kept under" in out
        kept = list((keep / "qemu-xenpv-logs").glob("xpv-gw*"))
        assert len(kept) == 2, kept                       # one run directory per worker
        logs = [p.name for d in kept for p in (d / "console").glob("*.log")]
        assert any(n.startswith(f"fail-{tag}-") for n in logs)
        assert not any((d / "control.sock").exists() for d in kept)   # daemons gone
        deadline = time.time() + 10
        while qemu_pids(tag) and time.time() < deadline:
            time.sleep(0.1)
        assert not qemu_pids(tag), "guests of the inner run were left running"
    finally:
        shutil.rmtree(keep, ignore_errors=True)
