"""The Python API: boot Xen guests on QEMU from Python, drive their
consoles with pexpect, read and write their XenStore, wait for them to end.

    import qemu_xenpv

    with qemu_xenpv.boot("guest-images/demo.cfg", memory=64, extra="debug") as dom:
        dom.console.expect_exact("demo> ")
        dom.console.sendline("echo hello")
        dom.console.expect("hello")
        print(dom.xenstore.read("name"))
        dom.console.sendline("poweroff")
        ending = dom.wait(timeout=30)
        assert ending.reason == "poweroff" and ending.exit_code == 0

Every domain is run by the qemu-xenpv daemon of a run directory (the same
one the command line uses: ``$QEMU_XENPV_RUNDIR``, else
``$XDG_RUNTIME_DIR/qemu-xenpv`` or ``/tmp/qemu-xenpv-$UID``); the first
request starts it.  :class:`Host` is one run directory and its daemon;
:func:`boot` is ``Host().create(...)`` with the host closed again when the
domain is.  The ``qemu-xenpv`` command line is written on this module: a
command is an API call and some printing.

Configuration comes from an xm/xl file (a path), a dict of the same
variables, or keyword arguments (``kernel=...``), in each case with
keyword arguments overriding, as ``var=value`` words do for ``create``.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .errors import ConfigError, XenPVError

__all__ = ["boot", "Host", "Domain", "Console", "Ending", "XenStore", "Watch",
           "load_config", "free_port", "ConfigWarning", "StaleDaemonWarning", "XenPVError", "EXIT_CODES",
           "DomainGone"]

ConfigSource = Union[str, os.PathLike, Mapping[str, Any], None]

# How a guest's life ended -> the exit status of `qemu-xenpv create -c`
# (the same table as qemu_xenpv.domain.EXIT_CODES; a unit test keeps them equal)
EXIT_CODES: Dict[str, int] = {"poweroff": 0, "reboot": 0, "suspend": 0, "crash": 2,
                              "watchdog": 3, "soft_reset": 0, "destroyed": 4, "qemu-died": 5}

FRAME = struct.Struct("<cI")        # console frames: D data, E end (daemon -> us), I input
DEFAULT_TIMEOUT = 30.0              # pexpect's default, for consoles and requests


class StaleDaemonWarning(UserWarning):
    """The daemon that runs the domains was started from other code than
    this process runs (the source or the firmware changed since)."""


class ConfigWarning(UserWarning):
    """A config variable that xl knows but qemu-xenpv ignores (it still boots)."""


class DomainGone(XenPVError):
    """The domain does not exist (any more)."""


@dataclass(frozen=True)
class Ending:
    """How a domain's life ended.

    reason:    ``poweroff``, ``reboot`` (with ``on_reboot`` other than restart),
               ``suspend``, ``crash``, ``watchdog``, ``soft_reset``, ``destroyed``
               (from outside) or ``qemu-died``
    exit_code: what ``qemu-xenpv create -c`` exits with for it (0 poweroff,
               2 crash, 3 watchdog, 4 destroyed, 5 QEMU died)
    detail:    why, for a crash by the hypervisor (``unhandled page fault ...``)
    crash_report: Xen-style register dump, stack and symbolised call trace
    """

    reason: str
    exit_code: int
    detail: str = ""
    crash_report: Tuple[str, ...] = ()

    @property
    def crashed(self) -> bool:
        return self.reason == "crash"

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "Ending":
        reason = rec.get("reason") or "destroyed"
        return cls(reason=reason, exit_code=int(rec.get("exit", EXIT_CODES.get(reason, 1))),
                   detail=rec.get("detail") or "", crash_report=tuple(rec.get("report") or ()))

    def __str__(self) -> str:
        return self.reason + (f" ({self.detail})" if self.detail else "")


# ---------------------------------------------------------------- config

def load_config(config: ConfigSource = None, overrides: Optional[Mapping[str, Any]] = None,
                base_dir: Optional[Union[str, os.PathLike]] = None, load_images: bool = True):
    """A checked :class:`qemu_xenpv.config.DomainConfig`.

    `config` is an xm/xl config file (path), a dict of config variables, an
    existing DomainConfig, or None (then `overrides` hold everything, e.g.
    ``{"kernel": "k.elf", "memory": 32}``).  `overrides` win over the
    file, as ``var=value`` on the command line.  Relative paths in a file
    are relative to the file; in a dict, to `base_dir` (default: the
    current directory).  With `load_images` the kernel (and ramdisk) are
    read and checked now, so every image error is raised here.
    """
    from . import config as cfgmod
    overrides = dict(overrides or {})
    if isinstance(config, cfgmod.DomainConfig):
        cfg = config
        if overrides:
            raise ConfigError("overrides cannot be applied to a DomainConfig; pass its "
                              "file or a dict instead")
    elif config is None or isinstance(config, Mapping):
        values = dict(config or {})
        values.update(overrides)
        cfg = config_from_dict(values, base_dir)
    else:
        path = os.fspath(config)
        cfg = cfgmod.load_config_file(path, overrides)
    if load_images and cfg.kernel_image is None:
        cfg.load_images()
    return cfg


def config_from_dict(values: Mapping[str, Any], base_dir=None, source: str = "<dict>"):
    """A DomainConfig from config variables, checked as a file's are: a
    variable we implement is used, a known xl variable we do not gives a
    warning, anything else is an error (with a did-you-mean)."""
    import difflib
    from . import config as cfgmod
    warns = []
    for k in values:
        if k in cfgmod.IMPLEMENTED:
            continue
        if k in cfgmod.KNOWN_UNIMPLEMENTED:
            warns.append(f"config variable '{k}' is not implemented by qemu-xenpv yet: ignored")
            continue
        hint = difflib.get_close_matches(k, list(cfgmod.IMPLEMENTED) +
                                         sorted(cfgmod.KNOWN_UNIMPLEMENTED), 1)
        raise ConfigError(f"{source}: unknown config variable '{k}'" +
                          (f" (did you mean '{hint[0]}'?)" if hint else ""))
    base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
    return cfgmod.from_values(dict(values), source, base, warns)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (for --gdb)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---------------------------------------------------------------- the console

class ConsoleStream:
    """The client end of a console connection: the daemon sends frames
    (D guest output, E how the guest ended); we send I (input) frames."""

    def __init__(self, sock: socket.socket, pending: bytes = b""):
        self.sock = sock
        self.buf = bytearray(pending)
        self.ending: Optional[Ending] = None
        self.closed = False                 # the connection is gone (ended or not)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_input(self, data: bytes) -> None:
        if data:
            self.sock.sendall(FRAME.pack(b"I", len(data)) + data)

    def _parse(self) -> List[Tuple[str, Any]]:
        out = []
        while len(self.buf) >= FRAME.size:
            kind, n = FRAME.unpack(self.buf[:FRAME.size])
            if len(self.buf) < FRAME.size + n:
                break
            payload = bytes(self.buf[FRAME.size:FRAME.size + n])
            del self.buf[:FRAME.size + n]
            if kind == b"D":
                out.append(("data", payload))
            elif kind == b"E":
                self.ending = Ending.from_record(json.loads(payload))
                out.append(("end", self.ending))
        return out

    def has_buffered(self) -> bool:
        return len(self.buf) >= FRAME.size and \
            len(self.buf) >= FRAME.size + FRAME.unpack(self.buf[:FRAME.size])[1]

    def events(self, timeout: Optional[float]) -> Optional[List[Tuple[str, Any]]]:
        """Complete frames as ("data", bytes) and ("end", Ending), plus
        ("closed", None) when the connection ends; None after `timeout` s
        with nothing new (timeout None: wait as long as it takes)."""
        evs = self._parse()
        if evs:
            return evs
        if self.closed:
            return [("closed", None)]
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        poller = select.poll()              # poll: no FD_SETSIZE limit in busy processes
        poller.register(self.sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not poller.poll(None if left is None else left * 1000):
                return None
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionError, OSError):
                chunk = b""
            if not chunk:
                self.closed = True
                return self._parse() + [("closed", None)]
            self.buf += chunk
            evs = self._parse()
            if evs:
                return evs
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- XenStore

class XenStore:
    """XenStore as domain 0 sees it, paths relative to a domain's home
    (``/local/domain/<domid>``) unless they start with ``/``.  Values are
    str (bytes with ``raw=True``)."""

    def __init__(self, host: "Host", home: str = ""):
        self._host = host
        self.home = home.rstrip("/")
        self._client = None
        self._lock = threading.Lock()

    def path(self, p: str) -> str:
        if p.startswith("/") or not self.home:
            return p if p.startswith("/") else "/" + p
        return f"{self.home}/{p}" if p else self.home

    def _c(self):
        if self._client is None:
            self._client = self._host.xenstore_client()
        return self._client

    def _call(self, fn, *args):
        with self._lock:
            try:
                return fn(self._c(), *args)
            except (ConnectionError, OSError) as e:
                self.close()
                raise XenPVError(f"xenstore: the qemu-xenpv daemon went away ({e})") from None

    _MISSING = object()

    def read(self, path: str, default: Any = _MISSING, raw: bool = False):
        """The value at `path`; `default` if given and it does not exist
        (else :class:`qemu_xenpv.xenstore.XenStoreError` ``ENOENT``)."""
        from .xenstore import XenStoreError
        try:
            v = self._call(lambda c, p: c.read(p), self.path(path))
        except XenStoreError as e:
            if e.errno == "ENOENT" and default is not XenStore._MISSING:
                return default
            raise
        return v if raw else v.decode(errors="replace")

    def write(self, path: str, value: Union[str, bytes]) -> None:
        self._call(lambda c, p, v: c.write(p, v), self.path(path), value)

    def rm(self, path: str) -> None:
        self._call(lambda c, p: c.rm(p), self.path(path))

    def ls(self, path: str = "") -> List[str]:
        """The children of `path`."""
        return self._call(lambda c, p: c.directory(p), self.path(path))

    def exists(self, path: str) -> bool:
        return self.read(path, default=None, raw=True) is not None

    def tree(self, path: str = "", perms: bool = False) -> List[str]:
        """``xenstore-ls`` lines."""
        return self._call(lambda c, p, x: c.tree(p, perms=x), self.path(path), perms)

    def get_perms(self, path: str) -> List[str]:
        return self._call(lambda c, p: c.get_perms(p), self.path(path))

    def watch(self, path: str, token: str = "qemu-xenpv") -> "Watch":
        """A watch on `path` (its own connection); the first event fires at
        once, as XenStore's do.  ``for path in watch`` or ``watch.next(timeout)``."""
        return Watch(self._host.xenstore_client(), self.path(path), token)

    def wait_for(self, path: str, predicate: Union[str, Callable[[Optional[str]], bool]],
                 timeout: float = DEFAULT_TIMEOUT) -> Optional[str]:
        """Until the value at `path` equals `predicate` (or `predicate(value)`
        is true; value None when the node does not exist): the value.
        TimeoutError after `timeout` s."""
        test = predicate if callable(predicate) else (lambda v: v == predicate)
        deadline = time.monotonic() + timeout
        with self.watch(path) as w:
            while True:
                value = self.read(path, default=None)
                if test(value):
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or w.next(left) is None:
                    value = self.read(path, default=None)
                    if test(value):
                        return value
                    raise TimeoutError(f"xenstore {self.path(path)}: still {value!r} after "
                                       f"{timeout:g} s")

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
            self._client = None


class Watch:
    """A XenStore watch on its own connection: iterate for event paths."""

    def __init__(self, client, path: str, token: str):
        self._c = client
        self.path = path
        self.token = token
        client.watch(path, token)

    def next(self, timeout: Optional[float] = None) -> Optional[str]:
        """The path of the next event; None after `timeout` s."""
        ev = self._c.read_watch(timeout)
        return ev[0] if ev else None

    def __iter__(self) -> Iterator[str]:
        while True:
            p = self.next()
            if p is None:
                return
            yield p

    def close(self) -> None:
        try:
            self._c.close()
        except OSError:
            pass

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- the host

class Host:
    """One qemu-xenpv run directory and its daemon (started on first use
    unless `start` is False).  Thread-safe; keeps one control connection
    open (which keeps the daemon alive) until :meth:`close`."""

    def __init__(self, run_dir: Optional[Union[str, os.PathLike]] = None, start: bool = True):
        from . import rundir
        if run_dir is None:
            self.run_dir = rundir.run_dir()
        else:
            self.run_dir = Path(run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.start = start
        self._sock: Optional[socket.socket] = None
        self._buf = b""
        self._lock = threading.RLock()

    # ---- connections ----
    @property
    def socket_path(self) -> Path:
        return self.run_dir / "control.sock"

    def daemon_running(self) -> bool:
        from .rundir import _ping
        return _ping(self.socket_path)

    def _open(self) -> socket.socket:
        """A new connection to the daemon (starting it if allowed)."""
        from .rundir import ensure_daemon
        last = None
        for _ in range(3):
            if self.start:
                path = ensure_daemon(rd=self.run_dir)
            else:
                path = self.socket_path
                if not self.daemon_running():
                    raise XenPVError("no qemu-xenpv domains are running (no daemon)")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return s
            except OSError as e:        # the daemon retired between ping and connect
                s.close()
                last = e
                time.sleep(0.05)
        raise XenPVError(f"cannot reach the qemu-xenpv daemon: {last}")

    def connect(self) -> "Host":
        with self._lock:
            if self._sock is None:
                self._sock = self._open()
                self._buf = b""
        return self

    @staticmethod
    def _read_reply(sock: socket.socket, buf: bytes, timeout: Optional[float]) -> Tuple[dict, bytes]:
        sock.settimeout(timeout)
        try:
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise XenPVError("the qemu-xenpv daemon closed the connection")
                buf += chunk
        except socket.timeout:
            raise TimeoutError("no answer from the qemu-xenpv daemon") from None
        finally:
            try:
                sock.settimeout(None)
            except OSError:
                pass
        line, _, rest = buf.partition(b"\n")
        resp = json.loads(line)
        if not resp.get("ok"):
            err = resp.get("error", "request failed")
            raise (DomainGone if "does not exist" in err else XenPVError)(err)
        return resp, rest

    def request(self, req: dict, timeout: Optional[float] = None) -> dict:
        """One JSON request on the shared control connection: its reply
        (XenPVError with the daemon's one-line message if it failed)."""
        with self._lock:
            self.connect()
            try:
                self._sock.sendall((json.dumps(req) + "\n").encode())
                resp, self._buf = self._read_reply(self._sock, self._buf, timeout)
                return resp
            except (TimeoutError, OSError) as e:
                self._drop()
                if isinstance(e, TimeoutError):
                    raise
                raise XenPVError(f"the qemu-xenpv daemon went away ({e})") from None
            except XenPVError as e:
                if "closed the connection" in str(e):
                    self._drop()
                raise

    def request_once(self, req: dict, timeout: Optional[float] = None) -> dict:
        """A request on its own connection (for ones that wait long)."""
        s = self._open()
        try:
            s.sendall((json.dumps(req) + "\n").encode())
            return self._read_reply(s, b"", timeout)[0]
        finally:
            s.close()

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
            self._buf = b""

    def close(self) -> None:
        """Close the control connection (the daemon exits on its own once it
        has no domain and no client)."""
        with self._lock:
            self._drop()

    def stale_daemon(self) -> Optional[str]:
        """Why the daemon would run a new domain on old code, or None.
        (An idle daemon of old code is replaced when a Host connects.)"""
        from .rundir import stale
        resp = self.request({"op": "ping"})
        if not stale(resp):
            return None
        return (f"the qemu-xenpv daemon (pid {resp.get('pid')}) was started before the "
                f"source or firmware changed and still runs {resp.get('domains')} domain(s): "
                "new domains get its old code until it exits (it does when its last "
                "domain ends)")

    def quit(self) -> None:
        """Stop the daemon now: every domain of this run directory is destroyed."""
        if not self.daemon_running():
            return
        try:
            self.request_once({"op": "quit"}, timeout=30)
        except (XenPVError, OSError):
            pass
        deadline = time.monotonic() + 15
        while self.socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.close()

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- domains ----
    def create(self, config: ConfigSource = None, *, name: Optional[str] = None,
               console: bool = True, accel: str = "auto", gdb: Union[None, bool, int] = None,
               trace_hypercalls: Optional[Union[str, os.PathLike]] = None,
               scramble_p2m: bool = False, console_log: Optional[Union[str, os.PathLike]] = None,
               timeout: float = DEFAULT_TIMEOUT, base_dir=None, doorbell: str = "ivshmem",
               encoding: Optional[str] = None, **variables: Any) -> "Domain":
        """Create and start a domain; returns it running.

        config:   an xm/xl config file, a dict of config variables, a
                  DomainConfig, or None (then `variables` hold them all)
        name:     the domain's name (default: the config's)
        console:  attach the console in the same request, so nothing the
                  guest prints and no end is missed (default); False: attach
                  when :attr:`Domain.console` is first used
        accel:    ``auto`` | ``tcg`` | ``kvm``
        gdb:      True (a free port) or a port: QEMU's gdbstub on 127.0.0.1;
                  the guest waits until gdb continues it (:attr:`Domain.gdb_port`)
        trace_hypercalls: a file for the JSON-lines hypercall trace
        scramble_p2m: shuffle the pseudo-physical to machine map
        console_log: also log console output to this file (pexpect logfile_read)
        timeout:  the console's default expect timeout (s)
        variables: config variables overriding the file (``memory=64``,
                  ``extra="debug"``)
        """
        from . import config as cfgmod, paths
        from qemu_xenpv.machine.qemu import qemu_binary
        preloaded = isinstance(config, cfgmod.DomainConfig)
        cfg = load_config(config, variables, base_dir)
        if name:
            cfg.name = name
        qemu_binary()
        for p in (paths.shim_elf(), paths.rom_bin()):
            if not p.exists():
                raise XenPVError(f"firmware {p} is not built: run 'make' in the source tree")
        if not preloaded:
            for w in cfg.warnings:
                warnings.warn(w, ConfigWarning, stacklevel=2)
        if gdb is True:
            gdb = free_port()
        opts = {"accel": accel, "gdb": int(gdb) if gdb else None,
                "trace": os.path.abspath(trace_hypercalls) if trace_hypercalls else None,
                "scramble_p2m": bool(scramble_p2m), "doorbell": doorbell}
        req = {"op": "create", "config": cfg.to_dict(), "options": opts, "cwd": os.getcwd(),
               "attach": bool(console)}
        self.connect()          # held open: the daemon stays while this Host is open
        note = self.stale_daemon()
        if note:
            warnings.warn(note, StaleDaemonWarning, stacklevel=2)
        if not console:
            return Domain(self, self.request(req), warnings=list(cfg.warnings))
        s = self._open()
        try:
            s.sendall((json.dumps(req) + "\n").encode())
            resp, rest = self._read_reply(s, b"", None)
        except BaseException:
            s.close()
            raise
        dom = Domain(self, resp, warnings=list(cfg.warnings))
        try:
            dom._set_console(ConsoleStream(s, rest), timeout=timeout, encoding=encoding,
                             console_log=console_log)
        except BaseException:
            s.close()
            dom.close()
            raise
        return dom

    def domains(self) -> List[dict]:
        """``list``: one dict per domain (name, domid, memory, vcpus, state,
        flags, time, console_port, accel, gdb_port, end_reason, kernel, ...)."""
        try:
            return self.request({"op": "list"})["domains"]
        except XenPVError as e:
            if "no daemon" in str(e):
                return []
            raise

    def domain(self, ref: Union[str, int]) -> "Domain":
        """A handle on an existing domain (by name or id)."""
        for d in self.domains():
            if d["name"] == str(ref) or str(d["domid"]) == str(ref):
                return Domain(self, d)
        raise DomainGone(f"domain '{ref}' does not exist")

    def dmesg(self, clear: bool = False) -> List[str]:
        """The hypervisor log (from the log file when no daemon runs)."""
        try:
            return self.request({"op": "dmesg", "clear": clear})["lines"]
        except XenPVError as e:
            if "no daemon" not in str(e):
                raise
        p = self.run_dir / "xenpv.log"
        return p.read_text(errors="replace").splitlines() if p.exists() else []

    def info(self, accel: str = "auto") -> Dict[str, Any]:
        """Versions, the accelerator `accel` resolves to and why, the daemon."""
        return self.request({"op": "info", "accel": accel})["info"]

    def xenstore_client(self):
        """A raw xs_wire client (domain 0) on the daemon's xenstored socket."""
        from .xenstore.client import XsClient
        from .xenstored import SOCKET_NAME
        if not self.daemon_running():
            raise XenPVError("no qemu-xenpv domains are running (no daemon, so no XenStore)")
        try:
            return XsClient(self.run_dir / SOCKET_NAME, timeout=None)
        except OSError as e:
            raise XenPVError(f"cannot reach xenstored: {e}") from None

    @property
    def xenstore(self) -> XenStore:
        """The whole store (absolute paths), as domain 0."""
        return XenStore(self)


# ---------------------------------------------------------------- a domain

class Domain:
    """A domain of a :class:`Host`, running or ended.  Use it as a context
    manager (or call :meth:`close`): on exit a domain still running is
    destroyed."""

    def __init__(self, host: Host, info: Mapping[str, Any], warnings: Optional[List[str]] = None):
        self.host = host
        self.name: str = info["name"]
        self.domid: int = int(info["domid"])
        self.serial: Optional[int] = info.get("serial")
        self.accel: Optional[str] = info.get("accel")
        self.accel_reason: Optional[str] = info.get("accel_reason")
        self.console_port: Optional[int] = info.get("console_port")
        self.gdb_port: Optional[int] = info.get("gdb_port")
        self.warnings: List[str] = list(warnings or info.get("warnings") or [])
        self.console_log = Path(info.get("console_log") or
                                host.run_dir / "console" / f"{self.name}.log")
        self._console: Optional["Console"] = None
        self._xenstore: Optional[XenStore] = None
        self._ending: Optional[Ending] = None
        self._owns_host = False
        self._logfile = None

    def __repr__(self) -> str:
        return f"<Domain {self.name} id={self.domid}>"

    # ---- requests ----
    def _req(self, op: str, **kw) -> dict:
        req = {"op": op, "domain": self.name, **kw}
        if self.serial is not None:
            req["serial"] = self.serial
        return self.host.request(req)

    # ---- console ----
    def _set_console(self, stream: ConsoleStream, timeout: float = DEFAULT_TIMEOUT,
                     encoding: Optional[str] = None, console_log=None) -> "Console":
        from .pexpect_console import Console
        con = Console(stream, self.name, timeout=timeout, encoding=encoding)
        if console_log is not None:
            self._logfile = open(console_log, "ab" if encoding is None else "a")
            con.logfile_read = self._logfile
        con._on_end.append(self._saw_end)
        self._console = con
        return con

    def _saw_end(self, ending: Ending) -> None:
        self._ending = ending

    def attach_console(self, timeout: float = DEFAULT_TIMEOUT, encoding: Optional[str] = None,
                       replay: bool = True, console_log=None) -> "Console":
        """A new console attachment (the history is replayed first)."""
        s = self.host._open()
        req = {"op": "console", "domain": self.name, "replay": replay}
        if self.serial is not None:
            req["serial"] = self.serial
        try:
            s.sendall((json.dumps(req) + "\n").encode())
            _resp, rest = Host._read_reply(s, b"", DEFAULT_TIMEOUT)
        except BaseException:
            s.close()
            raise
        if self._console is not None and not self._console.closed:
            self._console.close()
        return self._set_console(ConsoleStream(s, rest), timeout, encoding, console_log)

    @property
    def console(self) -> "Console":
        """The console (pexpect spawn-compatible), attached on first use if
        the domain was created without one."""
        if self._console is None:
            self.attach_console()
        return self._console

    @property
    def console_stream(self) -> Optional[ConsoleStream]:
        return self._console.stream if self._console is not None else None

    def console_output(self) -> bytes:
        """Everything in the daemon's console log of this domain so far."""
        try:
            return self.console_log.read_bytes()
        except OSError:
            return b""

    # ---- XenStore ----
    @property
    def xenstore(self) -> XenStore:
        """This domain's XenStore home (``/local/domain/<domid>``): relative
        paths are below it; absolute ones reach the whole store."""
        if self._xenstore is None:
            self._xenstore = XenStore(self.host, f"/local/domain/{self.domid}")
        return self._xenstore

    # ---- control ----
    def pause(self) -> None:
        self._req("pause")

    def unpause(self) -> None:
        self._req("unpause")

    def shutdown(self, wait: bool = False, timeout: Optional[float] = None,
                 reason: str = "poweroff") -> str:
        """Ask the guest to power off (control/shutdown, as xl); it must
        acknowledge within `timeout` s (60 by default).  With `wait`, also
        until it has ended.  Returns the daemon's message."""
        kw: Dict[str, Any] = {"wait": wait}
        if reason != "poweroff":
            kw["reason"] = reason
        if timeout is not None:
            kw["timeout"] = timeout
        return self._req("shutdown", **kw).get("message", "")

    def reboot(self, wait: bool = False, timeout: Optional[float] = None) -> str:
        return self.shutdown(wait=wait, timeout=timeout, reason="reboot")

    def sysrq(self, key: str) -> None:
        self._req("sysrq", key=key)

    def destroy(self) -> None:
        """Stop the domain now (also while it reboots, or a preserved one).
        Nothing happens if it is already gone."""
        try:
            self._req("destroy")
        except DomainGone:
            if self.ending is None and self.wait(timeout=0) is None:
                raise

    def wait(self, timeout: Optional[float] = None) -> Optional[Ending]:
        """Until the guest has ended (torn down, or shut down and preserved):
        how it ended.  `timeout` s at most: then TimeoutError (``timeout=0``
        only asks, returning None while it runs)."""
        if self.ending is not None:
            return self._ending
        req = {"op": "wait", "domain": self.name}
        if self.serial is not None:
            req["serial"] = self.serial
        if timeout is not None:
            req["timeout"] = timeout
        resp = self.host.request_once(req)
        if not resp.get("ended", True):
            if timeout == 0:
                return None
            raise TimeoutError(f"domain '{self.name}' still running after {timeout:g} s")
        self._ending = Ending.from_record(resp)
        return self._ending

    @property
    def ending(self) -> Optional[Ending]:
        """How it ended, if that is known already (see :meth:`wait`)."""
        if self._ending is None and self._console is not None and not self._console.closed:
            self._console.poll_end()            # an end frame may wait unread
            self._ending = self._console.ending
        return self._ending

    # ---- information ----
    def info(self) -> dict:
        """This domain's line of ``list``."""
        for d in self.host.domains():
            if d["domid"] == self.domid and d.get("serial", self.serial) == self.serial:
                return d
        raise DomainGone(f"domain '{self.name}' does not exist")

    @property
    def state(self) -> str:
        """running, paused, shutdown, crashed, dying, or dead once it is gone."""
        try:
            return self.info()["state"]
        except DomainGone:
            return "dead"

    @property
    def alive(self) -> bool:
        return self.state in ("running", "paused")

    def dmesg(self) -> List[str]:
        """The hypervisor log lines about this domain."""
        pat = re.compile(rf"(?<![\w.]){'d'}{self.domid}(?![\d])")
        return [l for l in self.host.dmesg() if pat.search(l)]

    # ---- life ----
    def close(self, destroy: bool = True) -> None:
        """Destroy the domain if it still runs (unless `destroy` is False),
        detach the console, and close the host if :func:`boot` made it."""
        try:
            if destroy and (self.host._sock is not None or self.host.daemon_running()):
                try:
                    self.destroy()
                except (XenPVError, OSError):
                    pass
        finally:
            if self._console is not None:
                self._console.close()
            if self._xenstore is not None:
                self._xenstore.close()
            if self._logfile is not None:
                self._logfile.close()
                self._logfile = None
            if self._owns_host:
                self.host.close()

    def __enter__(self) -> "Domain":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def boot(config: ConfigSource = None, *, run_dir: Optional[Union[str, os.PathLike]] = None,
         host: Optional[Host] = None, **kwargs: Any) -> Domain:
    """Create and start a domain; use the result as a context manager.

    ``boot("guest.cfg", memory=64, extra="...")``: see :meth:`Host.create`
    for the options; other keyword arguments are config variables.  The
    domain belongs to `host`, or to a new :class:`Host` of `run_dir` (the
    command line's run directory by default) that is closed with it."""
    own = host is None
    h = host or Host(run_dir)
    try:
        dom = h.create(config, **kwargs)
    except BaseException:
        if own:
            h.close()
        raise
    dom._owns_host = own
    return dom


def __getattr__(name: str):
    # the pexpect console is imported on first use: commands that never
    # attach a console do not pay for importing pexpect
    if name == "Console":
        from .pexpect_console import Console
        return Console
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
