"""run-test's pure parts: XTF's result line and exit codes, the worst of
several results, test discovery (kernel or config), JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qemu_xenpv import runtest
from qemu_xenpv.api import Ending

ROOT = Path(__file__).resolve().parents[2]


def test_xtf_exit_codes():
    assert runtest.EXIT_CODES == {"SUCCESS": 0, "SKIP": 3, "ERROR": 4, "FAILURE": 5, "CRASH": 6}


@pytest.mark.parametrize("text,want", [
    (b"--- Xen Test Framework ---\nTest result: SUCCESS\n", "SUCCESS"),
    (b"Test result: SKIP\r\n", "SKIP"),
    (b"Test result: FAILURE\nTest result: ERROR\n", "ERROR"),     # the last one counts
    (b"Test result: SUCCESSFUL-ish\n", None),
    (b"no result here\n", None),
])
def test_find_result(text, want):
    assert runtest.find_result(text) == want


def test_classify():
    poweroff, crash = Ending("poweroff", 0), Ending("crash", 2, "unhandled page fault")
    assert runtest.classify(b"Test result: FAILURE\n", poweroff, False) == ("FAILURE", "")
    assert runtest.classify(b"Test result: SUCCESS\n", crash, False)[0] == "CRASH"
    r, why = runtest.classify(b"Test result: SUCCESS\n", None, True, 5)
    assert r == "CRASH" and "timeout" in why and "5 s" in why
    r, why = runtest.classify(b"hello\n", poweroff, False)
    assert r == "CRASH" and "no 'Test result:' line" in why
    assert "unhandled page fault" in runtest.classify(b"", crash, False)[1]
    assert runtest.classify(b"", Ending("destroyed", 4), False)[0] == "CRASH"


def test_worst_result_wins():
    assert runtest.worst(["SUCCESS", "SKIP"]) == "SKIP"
    assert runtest.worst(["FAILURE", "ERROR", "SUCCESS"]) == "FAILURE"
    assert runtest.worst(["SKIP", "CRASH", "FAILURE"]) == "CRASH"
    assert runtest.worst([]) == "SUCCESS"


def test_make_case_tells_kernels_from_configs():
    elf = ROOT / "guest-images" / "build" / "xtfish.elf"
    if not elf.exists():
        pytest.fail("run 'make' first")
    k = runtest.make_case(str(elf))
    assert k.is_kernel and k.name == "xtfish.elf"
    c = runtest.make_case(str(ROOT / "guest-images" / "xtfish" / "test-xtfish-skip.cfg"))
    assert not c.is_kernel and c.name == "test-xtfish-skip"


def test_split_args_overrides(tmp_path):
    f = tmp_path / "a=b.cfg"
    f.write_text("")
    tests, sets = runtest.split_args([str(f), "extra=skip", "memory=64", "x.elf"])
    assert tests == [str(f), "x.elf"] and sets == {"extra": "skip", "memory": 64}


def test_junit_xml():
    cases = [runtest.TestCase(f"/t/{n}.cfg", n, False) for n in ("ok", "sk", "fa", "er", "cr")]
    res = [runtest.TestResult(cases[0], "SUCCESS", seconds=0.5, output=b"Test result: SUCCESS\n"),
           runtest.TestResult(cases[1], "SKIP", output=b"Test result: SKIP\n"),
           runtest.TestResult(cases[2], "FAILURE", output=b"Failure: x\x1b[0m\x00\nTest result: FAILURE\n"),
           runtest.TestResult(cases[3], "ERROR", output=b"Test result: ERROR\n"),
           runtest.TestResult(cases[4], "CRASH", "the guest crashed", output=b"...",
                              crash_report=["d1v0 (cr) crashed:", "EIP: [<1>] main+0x1"])]
    root = ET.fromstring(runtest.junit_xml(res))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) \
        == ("5", "1", "2", "1")
    tcs = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert list(tcs["ok"]) == [tcs["ok"].find("system-out")]
    assert tcs["ok"].get("time") == "0.500"
    assert tcs["sk"].find("skipped") is not None
    assert tcs["fa"].find("failure").get("type") == "FAILURE"
    assert "Test result: FAILURE" in tcs["fa"].find("system-out").text
    assert tcs["er"].find("error").get("type") == "ERROR"
    err = tcs["cr"].find("error")
    assert err.get("type") == "CRASH" and "the guest crashed" in err.get("message")
    assert "main+0x1" in err.text
