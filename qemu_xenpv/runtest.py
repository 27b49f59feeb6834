"""``qemu-xenpv run-test``: boot test kernels and report their results, with
the semantics of XTF's xtf-runner.

A test kernel prints ``Test result: SUCCESS|SKIP|ERROR|FAILURE`` on its
console and powers off.  The runner watches the console for that line (the
last one counts) and exits with XTF's codes:

    0 SUCCESS   3 SKIP   4 ERROR   5 FAILURE   6 CRASH

CRASH covers every test without a valid result: the guest crashed, was
still running at the timeout, ended without a result line, or could not
be started.  With several tests the worst result (in that order) is the
exit status.  A test is a kernel ELF (booted with 32 MiB, named after the
file) or an xl/xm config file such as XTF's ``test-pv32pae-*.cfg``;
``var=value`` words override config variables of every test.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .errors import XenPVError

RESULTS = ("SUCCESS", "SKIP", "ERROR", "FAILURE", "CRASH")
EXIT_CODES = {"SUCCESS": 0, "SKIP": 3, "ERROR": 4, "FAILURE": 5, "CRASH": 6}
RESULT_RE = re.compile(rb"Test result: (SUCCESS|SKIP|ERROR|FAILURE)\b")
DEFAULT_TIMEOUT = 60.0
KERNEL_MEMORY = 32                  # MiB for a bare kernel


@dataclass
class TestCase:
    path: str                       # the kernel or config file
    name: str                       # the test's name (config name or file name)
    is_kernel: bool


@dataclass
class TestResult:
    case: TestCase
    result: str                     # one of RESULTS
    why: str = ""                   # for CRASH: what happened instead of a result
    seconds: float = 0.0
    output: bytes = b""             # the console
    crash_report: List[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]


def find_result(output: bytes) -> Optional[str]:
    """The last ``Test result:`` of a console, or None."""
    found = RESULT_RE.findall(output)
    return found[-1].decode() if found else None


def classify(output: bytes, ending, timed_out: bool, timeout: float = 0.0):
    """(result, why) for a test's console and how its guest ended (an
    api.Ending or None)."""
    if timed_out:
        return "CRASH", f"no result within {timeout:g} s (timeout)"
    if ending is not None and ending.reason in ("crash", "watchdog", "qemu-died", "destroyed"):
        what = {"crash": "the guest crashed", "watchdog": "the watchdog fired",
                "qemu-died": "QEMU died", "destroyed": "destroyed from outside"}[ending.reason]
        return "CRASH", what + (f": {ending.detail}" if ending.detail else "")
    res = find_result(output)
    if res is not None:
        return res, ""
    how = f" (the guest ended: {ending.reason})" if ending is not None else ""
    return "CRASH", "no 'Test result:' line" + how


def worst(results: Sequence[str]) -> str:
    return max(results, key=RESULTS.index) if results else "SUCCESS"


def make_case(path: str) -> TestCase:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    is_kernel = head == b"\x7fELF"
    name = os.path.basename(path)
    if not is_kernel:
        name = os.path.splitext(name)[0]
        try:                        # the config's own name, when it says one
            from .config import load_config_file
            name = load_config_file(path).name or name
        except XenPVError:
            pass
    return TestCase(path=path, name=name, is_kernel=is_kernel)


def _sanitize_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.~+:@-]", "-", name) or "test"


class Runner:
    def __init__(self, host, timeout: float = DEFAULT_TIMEOUT, accel: str = "auto",
                 overrides: Optional[Dict[str, Any]] = None, verbose: bool = False,
                 log_dir: Optional[str] = None, out=None):
        self.host = host
        self.timeout = timeout
        self.accel = accel
        self.overrides = dict(overrides or {})
        self.verbose = verbose
        self.log_dir = log_dir
        self.out = out or sys.stdout
        self._print_lock = threading.Lock()
        self.width = 40

    def _config(self, case: TestCase):
        from . import api
        if case.is_kernel:
            values = {"kernel": os.path.abspath(case.path), "memory": KERNEL_MEMORY,
                      "name": _sanitize_name(case.name)}
            values.update(self.overrides)
            return api.load_config(values)
        return api.load_config(case.path, self.overrides)

    def _create(self, cfg):
        """Create the domain; a name already in use gets a suffix."""
        base = cfg.name
        for attempt in range(5):
            try:
                return self.host.create(cfg, console=True, accel=self.accel,
                                        timeout=self.timeout)
            except XenPVError as e:
                if "already exists" not in str(e) or attempt == 4:
                    raise
                cfg.name = f"{base}-{uuid.uuid4().hex[:4]}"
        raise AssertionError("unreachable")

    def run_one(self, case: TestCase) -> TestResult:
        import pexpect
        t0 = time.monotonic()
        try:
            cfg = self._config(case)
            dom = self._create(cfg)
        except XenPVError as e:
            r = TestResult(case, "CRASH", f"could not start: {e}", time.monotonic() - t0)
            self._report(r)
            return r
        timed_out = False
        output = bytearray()
        try:
            con = dom.console
            deadline = time.monotonic() + self.timeout      # the guest's time, not ours
            while True:
                left = deadline - time.monotonic()
                try:
                    output += con.read_nonblocking(65536, timeout=max(0.0, min(left, 1.0)))
                except pexpect.TIMEOUT:
                    if left <= 0:
                        timed_out = True
                        break
                    continue
                except pexpect.EOF:
                    break
            if timed_out:
                dom.destroy()
            ending = None if timed_out else (dom.ending or dom.wait(timeout=30))
        finally:
            dom.close()
        result, why = classify(bytes(output), ending, timed_out, self.timeout)
        r = TestResult(case, result, why, time.monotonic() - t0, bytes(output),
                       list(ending.crash_report) if ending is not None else [])
        self._save_log(r)
        self._report(r)
        return r

    def _save_log(self, r: TestResult) -> None:
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            with open(os.path.join(self.log_dir, f"{_sanitize_name(r.case.name)}.log"), "wb") as f:
                f.write(r.output)
                if r.crash_report:
                    f.write(("\n".join(r.crash_report) + "\n").encode())

    def line(self, r: TestResult) -> str:
        return f"{r.case.name:<{self.width}} {r.result}" + (f" ({r.why})" if r.why else "")

    def _report(self, r: TestResult) -> None:
        with self._print_lock:
            print(self.line(r), file=self.out, flush=True)
            if self.verbose:
                text = r.output.decode(errors="replace").replace("\r\n", "\n")
                for l in text.splitlines() + r.crash_report:
                    print(f"    {l}", file=self.out)
                self.out.flush()

    def run(self, cases: Sequence[TestCase], jobs: int = 1) -> List[TestResult]:
        self.width = max([40] + [len(c.name) + 1 for c in cases])
        if jobs <= 1 or len(cases) <= 1:
            return [self.run_one(c) for c in cases]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(self.run_one, cases))


# ---------------------------------------------------------------- JUnit XML

_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(b: bytes) -> str:
    return _XML_BAD.sub("\ufffd", b.decode(errors="replace").replace("\r\n", "\n"))


def junit_xml(results: Sequence[TestResult], suite: str = "qemu-xenpv run-test") -> str:
    """JUnit XML: SUCCESS passes, SKIP is <skipped>, FAILURE a <failure>,
    ERROR and CRASH an <error> (type = the XTF result); the console is the
    test's <system-out>."""
    import xml.etree.ElementTree as ET
    n = len(results)
    counts = {k: sum(1 for r in results if r.result == k) for k in RESULTS}
    total = sum(r.seconds for r in results)
    attrs = {"name": suite, "tests": str(n), "failures": str(counts["FAILURE"]),
             "errors": str(counts["ERROR"] + counts["CRASH"]), "skipped": str(counts["SKIP"]),
             "time": f"{total:.3f}"}
    root = ET.Element("testsuites", attrs)
    ts = ET.SubElement(root, "testsuite", dict(
        attrs, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), hostname=socket.gethostname()))
    for r in results:
        tc = ET.SubElement(ts, "testcase", {"classname": "run-test", "name": r.case.name,
                                            "file": r.case.path, "time": f"{r.seconds:.3f}"})
        msg = r.result + (f": {r.why}" if r.why else "")
        if r.result == "SKIP":
            ET.SubElement(tc, "skipped", {"message": msg})
        elif r.result == "FAILURE":
            ET.SubElement(tc, "failure", {"message": msg, "type": r.result}).text = \
                _xml_text(r.output[-4096:])
        elif r.result in ("ERROR", "CRASH"):
            el = ET.SubElement(tc, "error", {"message": _xml_text(msg.encode()), "type": r.result})
            el.text = "\n".join(r.crash_report) or _xml_text(r.output[-4096:])
        ET.SubElement(tc, "system-out").text = _xml_text(r.output)
    ET.indent(root) if hasattr(ET, "indent") else None
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------- the command

def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run-test", help="run test kernels, XTF-runner style (exit 0/3/4/5/6)",
        description="Boot test kernels (ELF) or xl configs (XTF's test-*.cfg), watch each\n"
                    "console for 'Test result: SUCCESS|SKIP|ERROR|FAILURE' and exit with\n"
                    "XTF's code for the worst result.",
        epilog="exit status: 0 SUCCESS, 3 SKIP, 4 ERROR, 5 FAILURE, 6 CRASH (crashed, timed\n"
               "out, no result line, or could not start); 1 bad usage",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tests", nargs="+", metavar="KERNEL|CONFIG",
                   help="test kernels or config files; var=value overrides config variables")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds a test may run (from its creation) before it counts as "
                        f"CRASH (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML results to FILE")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="run N tests at once (default 1)")
    p.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    p.add_argument("--log-dir", metavar="DIR", help="write each test's console to DIR/NAME.log")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each test's console after its result")
    return p


def split_args(words: Sequence[str]):
    """(test files, overrides): a word that is not a file and has '=' is a
    var=value override."""
    from .config import parse_overrides
    tests, sets = [], []
    for w in words:
        if "=" in w and not os.path.exists(w):
            sets.append(w)
        else:
            tests.append(w)
    return tests, parse_overrides(sets)


def main_from_args(args) -> int:
    from .api import Host
    tests, overrides = split_args(args.tests)
    if not tests:
        raise XenPVError("run-test: no test kernel or config given")
    missing = [t for t in tests if not os.path.isfile(t)]
    if missing:
        raise XenPVError(f"run-test: {missing[0]}: no such file")
    if args.jobs < 1:
        raise XenPVError("run-test: -j wants a positive number")
    cases = [make_case(t) for t in tests]
    with Host(start=True) as host:
        runner = Runner(host, timeout=args.timeout, accel=args.accel, overrides=overrides,
                        verbose=args.verbose, log_dir=args.log_dir)
        results = runner.run(cases, jobs=args.jobs)
    if len(results) > 1:
        print("Combined test results:")
        for r in results:
            print(runner.line(r))
    if args.junit:
        with open(args.junit, "w") as f:
            f.write(junit_xml(results))
    return EXIT_CODES[worst([r.result for r in results])]
