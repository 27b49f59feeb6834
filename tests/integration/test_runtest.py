"""qemu-xenpv run-test on our own test guest (guest-images/xtfish): XTF's
exit code for a guest that succeeds, skips, errs, fails, crashes (two
ways), hangs and ends without a result; several at once with -j; JUnit
XML; a bare kernel with var=value; concurrent invocations sharing one
daemon start-up."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

import importlib.util
from pathlib import Path

# tests/conftest.py's helpers, by path (a plain `from conftest import` finds
# tests/unit/conftest.py when unit tests are collected first)
_spec = importlib.util.spec_from_file_location(
    "qemu_xenpv_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
GUESTS, XENPV = _conftest.GUESTS, _conftest.XENPV

CASES = {"success": 0, "skip": 3, "error": 4, "failure": 5, "crash": 6, "fault": 6,
         "hang": 6, "silent": 6}


def cfg(outcome):
    p = GUESTS / "xtfish" / f"test-xtfish-{outcome}.cfg"
    assert (GUESTS / "build" / "xtfish.elf").exists(), "run 'make' first"
    return p


def test_each_outcome_gives_xtfs_exit_code(xenpv):
    """One run-test process per outcome, all started at once: they share
    the run directory, so they also race to start its daemon."""
    procs = {o: subprocess.Popen([XENPV, "run-test", "--timeout", "4", cfg(o),
                                  f"name=rt-{o}-{xenpv.tag}"], env=xenpv.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for o in CASES}
    out = {o: p.communicate(timeout=120) for o, p in procs.items()}
    for o, want in CASES.items():
        stdout, stderr = out[o]
        assert procs[o].returncode == want, f"{o}: {stdout}{stderr}"
        assert f"rt-{o}-{xenpv.tag}" not in stderr
        line = stdout.strip().splitlines()[-1]
        assert line.split()[1] == {0: "SUCCESS", 3: "SKIP", 4: "ERROR", 5: "FAILURE",
                                   6: "CRASH"}[want], stdout
    assert "timeout" in out["hang"][0]
    assert "no 'Test result:' line" in out["silent"][0]
    assert "the guest crashed" in out["crash"][0]
    assert "daemon did not start" not in "".join(e for _, e in out.values())
    assert xenpv.run("list").stdout.count(xenpv.tag) == 0       # all torn down


def test_many_at_once_with_junit(xenpv, tmp_path):
    junit = tmp_path / "results.xml"
    outcomes = ["success", "skip", "failure", "fault", "hang"]
    r = xenpv.run("run-test", "-j", "3", "--timeout", "4", "--junit", junit,
                  "--log-dir", tmp_path / "logs", *[cfg(o) for o in outcomes], timeout=120)
    assert r.returncode == 6, r.stdout + r.stderr                  # the worst: CRASH
    assert "Combined test results:" in r.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("5", "1", "2", "1")
    tcs = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert set(tcs) == {f"test-xtfish-{o}" for o in outcomes}
    assert "Test result: SUCCESS" in tcs["test-xtfish-success"].find("system-out").text
    assert tcs["test-xtfish-skip"].find("skipped") is not None
    assert tcs["test-xtfish-failure"].find("failure") is not None
    fault = tcs["test-xtfish-fault"].find("error")
    assert fault.get("type") == "CRASH" and "xtfish_fault+0x" in fault.text
    assert "timeout" in tcs["test-xtfish-hang"].find("error").get("message")
    assert (tmp_path / "logs" / "test-xtfish-failure.log").read_bytes().count(b"Test result: FAILURE") == 1
    assert xenpv.run("list").stdout.count("xtfish") == 0


def test_a_bare_kernel_and_overrides(xenpv):
    elf = GUESTS / "build" / "xtfish.elf"
    r = xenpv.run("run-test", elf, "extra=skip", "-v")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "xtfish.elf" in r.stdout and "SKIP" in r.stdout
    assert "    Outcome: skip" in r.stdout                              # -v: the console


def test_usage_errors(xenpv, tmp_path):
    r = xenpv.run("run-test", tmp_path / "nope.cfg")
    assert r.returncode == 1 and "no such file" in r.stderr
    bad = tmp_path / "bad.cfg"
    bad.write_text('kernel = "/nonexistent"\n')
    r = xenpv.run("run-test", bad)
    assert r.returncode == 6 and "could not start" in r.stdout


def test_create_c_sees_guests_that_end_at_once(xenpv):
    """`create -c` creates and attaches in one request: a guest that prints
    and powers off (or crashes) within milliseconds is seen to the end, with
    the right exit status (0 poweroff, 2 crash with a symbolised report)."""
    xtfish = GUESTS / "xtfish.cfg"
    procs = [subprocess.Popen([XENPV, "create", "-c", xtfish, f"name=q{i}-{xenpv.tag}",
                               f"extra={'crash' if i == 0 else 'success quiet'}"],
                              env=xenpv.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(5)]
    outs = [p.communicate(timeout=120) for p in procs]
    crash_out, crash_err = outs[0]
    assert procs[0].returncode == 2, crash_out + crash_err
    assert "xtfish: asking for SHUTDOWN_crash" in crash_out
    assert "xtfish_crash+0x" in crash_err and "qemu-xenpv: the guest crashed" in crash_err
    for p, (out, err) in zip(procs[1:], outs[1:]):
        assert p.returncode == 0, out + err
        assert "Test result: SUCCESS" in out
