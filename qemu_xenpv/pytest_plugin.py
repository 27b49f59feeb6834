"""pytest plugin (entry point ``pytest11``: installed with qemu-xenpv, on
for every pytest run): Xen guests as fixtures.

    def test_demo(xen_guest):
        dom = xen_guest("guest-images/demo.cfg", memory=32)
        dom.console.expect_exact("demo> ")
        dom.console.sendline("echo hi")
        dom.console.expect("hi")

``xen_guest(config=None, **kwargs)`` boots a guest and returns a running
:class:`qemu_xenpv.api.Domain` (config file, dict or keyword arguments, as
:func:`qemu_xenpv.boot`); every guest is destroyed when the test ends,
whatever happened.  Names get a unique suffix, so tests never clash.

Each pytest process (each pytest-xdist worker) has its own run directory
and daemon, so ``pytest -n N`` shares no socket, port or memory name
between workers.  When a test fails, the report shows each of its guests'
console and hypervisor log (and the crash report of a crashed guest).

Options: ``--xenpv-accel auto|tcg|kvm`` (ini ``xenpv_accel``) and
``--xenpv-keep-logs`` (keep the run directories, with every console log and
the hypervisor log, under ``$TMPDIR/qemu-xenpv-logs``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, List, Optional

import pytest

KEEP_DIR = "qemu-xenpv-logs"
MAX_REPORT = 32 * 1024              # bytes of each log shown in a failure report

_DOMAINS = pytest.StashKey[list]()          # api.Domain objects a test booted
_RUN_DIRS = pytest.StashKey[list]()         # other run directories whose logs to show


def pytest_addoption(parser) -> None:
    group = parser.getgroup("xenpv", "qemu-xenpv (Xen guests on QEMU)")
    group.addoption("--xenpv-accel", choices=("auto", "tcg", "kvm"), default=None,
                    help="accelerator for xen_guest guests (default: ini xenpv_accel, or auto)")
    group.addoption("--xenpv-keep-logs", action="store_true", default=False,
                    help=f"keep each run directory (console and hypervisor logs) under "
                         f"$TMPDIR/{KEEP_DIR}")
    parser.addini("xenpv_accel", "accelerator for xen_guest guests: auto, tcg or kvm",
                  default="auto")


def register_run_dir(item, run_dir) -> None:
    """Show the logs of another qemu-xenpv run directory (its console logs
    and hypervisor log) in `item`'s report if it fails."""
    item.stash.setdefault(_RUN_DIRS, []).append(Path(run_dir))


class XenpvSession:
    """The run directory and daemon of this pytest process (worker)."""

    def __init__(self, config):
        self.config = config
        self.accel = config.getoption("--xenpv-accel") or config.getini("xenpv_accel") or "auto"
        self.keep = bool(config.getoption("--xenpv-keep-logs"))
        self.run_dir: Optional[Path] = None
        self.host = None

    def get_host(self):
        if self.host is None:
            from .api import Host
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            base = None
            if self.keep:
                base = Path(tempfile.gettempdir()) / KEEP_DIR
                base.mkdir(exist_ok=True)
            # short, in /tmp: a Unix socket path has at most 107 bytes
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"xpv-{worker}-",
                                                 dir=str(base) if base else "/tmp"))
            self.host = Host(self.run_dir).connect()
        return self.host

    def close(self) -> None:
        if self.host is not None:
            try:
                self.host.quit()            # destroys whatever is left
            finally:
                self.host.close()
                self.host = None
        if self.run_dir is not None and not self.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def pytest_configure(config) -> None:
    config.stash[_SESSION] = XenpvSession(config)


def pytest_unconfigure(config) -> None:
    s = config.stash.get(_SESSION, None)
    if s is not None:
        s.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if config.getoption("--xenpv-keep-logs"):
        terminalreporter.write_line(
            f"qemu-xenpv: logs kept under {Path(tempfile.gettempdir()) / KEEP_DIR}")


_SESSION = pytest.StashKey[XenpvSession]()


@pytest.fixture(scope="session")
def xenpv_host(pytestconfig):
    """The :class:`qemu_xenpv.api.Host` (run directory + daemon) of this
    pytest process; guests of xen_guest run there."""
    return pytestconfig.stash[_SESSION].get_host()


class GuestFactory:
    """``xen_guest(config=None, *, name=None, **kwargs)`` -> a running
    :class:`qemu_xenpv.api.Domain`.  kwargs are :meth:`qemu_xenpv.api.Host.create`'s
    options (console, gdb, trace_hypercalls, scramble_p2m, timeout, ...)
    and config variables (memory=64, extra="...")."""

    def __init__(self, host, accel: str, domains: list):
        self.host = host
        self.accel = accel
        self.domains = domains

    def __call__(self, config: Any = None, *, name: Optional[str] = None, **kwargs):
        from . import api
        variables = {k: v for k, v in kwargs.items() if k not in _CREATE_OPTIONS}
        options = {k: v for k, v in kwargs.items() if k in _CREATE_OPTIONS}
        cfg = api.load_config(config, variables, options.pop("base_dir", None))
        cfg.name = f"{name or cfg.name}-{uuid.uuid4().hex[:6]}"
        for w in cfg.warnings:
            import warnings
            warnings.warn(w, api.ConfigWarning, stacklevel=2)
        options.setdefault("accel", self.accel)
        dom = self.host.create(cfg, **options)
        self.domains.append(dom)
        return dom

    def teardown(self) -> None:
        errors = []
        for dom in reversed(self.domains):
            try:
                dom.close()                 # destroys it if it still runs
            except Exception as e:          # pragma: no cover - reported below
                errors.append(f"{dom.name}: {e}")
        if errors:
            raise RuntimeError("xen_guest teardown: " + "; ".join(errors))


_CREATE_OPTIONS = {"console", "accel", "gdb", "trace_hypercalls", "scramble_p2m",
                   "console_log", "timeout", "base_dir", "doorbell", "encoding"}


@pytest.fixture
def xen_guest(request, xenpv_host):
    """Factory: ``dom = xen_guest("guest.cfg", memory=64)`` boots a guest
    (see :class:`GuestFactory`); all are destroyed after the test."""
    domains: List = request.node.stash.setdefault(_DOMAINS, [])
    factory = GuestFactory(xenpv_host, request.config.stash[_SESSION].accel, domains)
    yield factory
    factory.teardown()


# ---------------------------------------------------------------- failure reports

def _tail(data: bytes, limit: int = MAX_REPORT) -> str:
    text = data[-limit:].decode(errors="replace").replace("\r\n", "\n")
    return ("[... earlier output cut ...]\n" if len(data) > limit else "") + text


def _domain_sections(dom) -> List[tuple]:
    out = [(f"xen guest {dom.name}: console", _tail(dom.console_output()) or "(no output)")]
    lines = []
    try:
        lines = dom.dmesg()
    except Exception as e:
        lines = [f"(the hypervisor log is not available: {e})"]
    ending = None
    try:
        ending = dom.ending or dom.wait(timeout=0)
    except Exception:
        pass
    if ending is not None:
        lines.append(f"-- the guest ended: {ending}")
        lines += list(ending.crash_report)
    out.append((f"xen guest {dom.name}: hypervisor log", "\n".join(lines[-400:])))
    return out


def _run_dir_sections(rd: Path) -> List[tuple]:
    out = []
    for log in sorted((rd / "console").glob("*.log")) if (rd / "console").is_dir() else []:
        out.append((f"xen guest {log.stem}: console", _tail(log.read_bytes()) or "(no output)"))
    hv = rd / "xenpv.log"
    if hv.exists():
        out.append(("qemu-xenpv hypervisor log", _tail(hv.read_bytes())))
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    try:
        for dom in item.stash.get(_DOMAINS, []):
            rep.sections.extend(_domain_sections(dom))
        for rd in item.stash.get(_RUN_DIRS, []):
            rep.sections.extend(_run_dir_sections(rd))
    except Exception as e:                  # a report must never fail
        rep.sections.append(("qemu-xenpv", f"could not collect the guest logs: {e!r}"))
