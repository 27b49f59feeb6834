"""The run directory and the daemon's control socket, from a client's side:
where they are, whether a daemon answers, and starting one.  Light on
purpose (no asyncio): every CLI command imports it.  qemu_xenpv.daemon
re-exports these names."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .errors import XenPVError

DAEMON_START_TIMEOUT = 30.0


def run_dir() -> Path:
    d = os.environ.get("QEMU_XENPV_RUNDIR")
    if not d:
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        d = os.path.join(xdg, "qemu-xenpv") if xdg else f"/tmp/qemu-xenpv-{os.getuid()}"
    p = Path(d)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    return p


def socket_path(rd: Optional[Path] = None) -> Path:
    return (rd or run_dir()) / "control.sock"


def console_log_path(rd: Path, name: str) -> Path:
    (rd / "console").mkdir(exist_ok=True)
    return rd / "console" / f"{name}.log"


def ensure_daemon(timeout: float = DAEMON_START_TIMEOUT, rd: Optional[Path] = None) -> Path:
    """Connectable control socket, starting a daemon if none is running.

    The daemon is a fresh Python process (not a fork of this one: the
    caller may have threads, as pytest does).  It says 'ready' on a pipe
    once both its sockets listen; if it dies first, its own error (the end
    of daemon.log) is reported at once instead of after a timeout."""
    rd = rd or run_dir()
    path = socket_path(rd)
    if _usable(path):
        return path
    with open(rd / "lock", "a") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if _usable(path):
            return path
        rfd, wfd = os.pipe()
        logf = open(rd / "daemon.log", "ab")
        try:
            env = dict(os.environ, QEMU_XENPV_RUNDIR=str(rd))
            log_start = logf.seek(0, os.SEEK_END)
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from qemu_xenpv.daemon import main; "
                                       "sys.exit(main())",
                 "--run-dir", str(rd), "--ready-fd", str(wfd), "--detach"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(wfd,),
                start_new_session=True, cwd="/", env=env)
        except OSError as e:
            os.close(rfd)
            raise XenPVError(f"cannot start the qemu-xenpv daemon: {e}") from None
        finally:
            os.close(wfd)
            logf.close()
        try:
            proc.wait(DAEMON_START_TIMEOUT)     # the first process exits once it has forked
        except subprocess.TimeoutExpired:
            pass
        timed_out = False
        try:
            got = b""
            deadline = time.monotonic() + timeout
            while b"\n" not in got:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([rfd], [], [], max(0.0, left))
                if not ready:
                    timed_out = True
                    break
                chunk = os.read(rfd, 64)
                if not chunk:                   # it exited (or closed the pipe) first
                    break
                got += chunk
        finally:
            os.close(rfd)
        if got.startswith(b"ready") and _ping(path):
            return path
        if not timed_out:
            time.sleep(0.1)                     # let it finish writing its last words
        why = _log_tail(rd / "daemon.log", log_start)
        if timed_out:
            raise XenPVError(f"the qemu-xenpv daemon did not start within {timeout:g} s "
                             f"(see {rd / 'daemon.log'})")
        raise XenPVError(f"the qemu-xenpv daemon failed to start: {why or 'no message'} "
                         f"(see {rd / 'daemon.log'})")


def _log_tail(path: Path, start: int = 0) -> str:
    """The last non-empty line written to `path` after offset `start`."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1].strip() if lines else ""


def stale(reply: Optional[dict]) -> bool:
    """The daemon that sent this ping reply runs other code than we do (it
    was started before the source or the firmware changed)."""
    from .paths import code_id
    return bool(reply) and reply.get("code") not in (None, code_id())


def _usable(path: Path) -> bool:
    """A daemon listens on `path` and may serve us: one started from other
    code (see stale()) that has no domains is told to quit, so that a new
    one starts; one that still runs domains keeps serving (callers warn)."""
    reply = ping_reply(path)
    if reply is None:
        return False
    if not stale(reply) or reply.get("domains"):
        return True
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b'{"op": "quit"}\n')
        s.makefile("rb").readline()
        s.close()
    except OSError:
        pass
    deadline = time.monotonic() + 15
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return ping_reply(path) is not None


def _ping(path: Path, timeout: float = 10.0) -> bool:
    """Is a daemon listening on `path`?  A socket nobody listens on (refused)
    or no socket means no; a daemon too busy to answer in time still counts
    as running (starting a second one would steal its socket)."""
    return ping_reply(path, timeout) is not None


def ping_reply(path: Path, timeout: float = 10.0) -> Optional[dict]:
    """The daemon's answer to a ping ({} if it is too busy to answer in
    time), or None if no daemon listens on `path`."""
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            return None
        try:
            s.sendall(b'{"op": "ping"}\n')
            reply = s.makefile("rb").readline()
        except socket.timeout:
            return {}
        except OSError:
            return None
        if not reply.startswith(b"{"):
            return None
        try:
            return json.loads(reply)
        except ValueError:
            return {}
    finally:
        s.close()
