"""The daemon: one hypervisor (Xen + domain 0) per run directory, serving
the CLI and tools on a Unix socket, as xend did over HTTP.

Requests are JSON lines.  A console attachment switches the connection to
frames (1 type byte + u32 length + payload): D data and E end (server to
client), I input (client to server).  The daemon starts on the first
`create`, and exits once it has had no domain and no client for a moment,
so nothing is left running.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Optional

from . import __version__
from .config import DomainConfig, from_values
from .errors import XenPVError

log = logging.getLogger("qemu_xenpv.daemon")

IDLE_EXIT_SECONDS = 1.5
CONSOLE_BASE_PORT = 9600
FRAME = struct.Struct("<cI")


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


class Daemon:
    def __init__(self, rd: Path):
        from .hypervisor import Hypervisor
        self.rd = rd
        self.hv = Hypervisor(str(rd / "xenpv.log"))
        self.clients = 0
        self.last_activity = time.monotonic()
        self.stop = asyncio.Event()
        self.accel_choice = None
        self.hv.on_domain_end.append(lambda d: self._touch())
        self.hv.on_domain_restart.append(self._on_restart)

    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    # ---- accel ----
    def choose_accel(self, requested: str):
        from qemu_xenpv.machine import accel
        return accel.choose(requested, self._kvm_self_test)

    def _kvm_self_test(self) -> bool:
        from .selftest import shim_boot_self_test
        try:
            return shim_boot_self_test("kvm", timeout=5.0)
        except Exception:
            return False

    # ---- server ----
    async def serve(self) -> None:
        path = socket_path(self.rd)
        if path.exists():
            path.unlink()
        server = await asyncio.start_unix_server(self._client, path=str(path))
        os.chmod(path, 0o600)
        self.hv.dmesg(f"(XEN) control socket {path}")
        from .xenstored import SOCKET_NAME
        await self.hv.xenstore.serve_socket(self.rd / SOCKET_NAME)
        try:
            while not self.stop.is_set():
                await asyncio.sleep(0.25)
                idle = not self.hv.domains and self.clients == 0 and not self.hv.xenstore.clients
                if idle and time.monotonic() - self.last_activity > IDLE_EXIT_SECONDS:
                    break
        finally:
            server.close()
            await self.hv.xenstore.close_socket()
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            await self.hv.destroy_all()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients += 1
        self._touch()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    req = json.loads(line)
                    handler = getattr(self, "op_" + req.get("op", "").replace("-", "_"), None)
                    if handler is None:
                        raise XenPVError(f"unknown request '{req.get('op')}'")
                    resp = await handler(req, reader, writer)
                except XenPVError as e:
                    resp = {"ok": False, "error": str(e)}
                except Exception as e:
                    log.exception("request failed")
                    resp = {"ok": False, "error": f"internal error: {e!r}"}
                if resp is None:            # the handler took the connection over
                    break
                writer.write((json.dumps(resp) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients -= 1
            self._touch()
            try:
                writer.close()
            except Exception:
                pass

    def _dom(self, req):
        ref = req.get("domain")
        d = self.hv.find(str(ref)) if ref is not None else None
        if d is None:
            raise XenPVError(f"domain '{ref}' does not exist")
        return d

    # ---- operations ----
    async def op_ping(self, req, r, w):
        return {"ok": True, "pid": os.getpid()}

    async def op_create(self, req, r, w):
        cfg = from_values(req["config"], req["config"].get("source") or "<config>", req.get("cwd"))
        cfg.kernel = req["config"]["kernel"]
        cfg.ramdisk = req["config"].get("ramdisk")
        cfg.load_images()
        opts = req.get("options", {})
        accel, why = self.choose_accel(opts.get("accel", "auto"))
        dom = await self.hv.create_domain(
            cfg, accel=accel, doorbell=opts.get("doorbell", "ivshmem"),
            gdb_port=opts.get("gdb"), gdb_wait=bool(opts.get("gdb")),
            trace_path=opts.get("trace"), scramble_p2m=bool(opts.get("scramble_p2m")))
        await self._setup_console(dom)
        return {"ok": True, "domid": dom.domid, "name": dom.name, "accel": accel,
                "accel_reason": why, "console_port": dom.console_port,
                "gdb_port": dom.gdb_port, "warnings": cfg.warnings}

    async def _setup_console(self, dom) -> None:
        logf = open(console_log_path(self.rd, dom.name), "ab", buffering=0)
        dom.console_logfile = logf
        dom.console.add_sink(logf.write)
        dom.on_end.append(lambda d: logf.close())
        await self._start_tcp_console(dom)

    def _on_restart(self, old, new) -> None:
        new.console_logfile = getattr(old, "console_logfile", None)
        if new.console_logfile and not new.console_logfile.closed:
            new.console.add_sink(new.console_logfile.write)
        for sink in getattr(old, "console_clients", []):
            new.console.add_sink(sink)
        new.console_clients = getattr(old, "console_clients", [])
        new.tcp_server = getattr(old, "tcp_server", None)

    async def _start_tcp_console(self, dom) -> None:
        """The seeds' console on TCP port 9600 + domid (loopback only)."""
        if True:
            clients = []

            async def handle(reader, writer):
                sink = writer.write
                dom_now = self.hv.domains.get(dom.domid, dom)
                dom_now.console.add_sink(sink)
                clients.append(writer)
                try:
                    while True:
                        data = await reader.read(1024)
                        if not data:
                            break
                        self.hv.domains.get(dom.domid, dom).console.write_input(data)
                finally:
                    self.hv.domains.get(dom.domid, dom).console.remove_sink(sink)
                    writer.close()
            for port in (CONSOLE_BASE_PORT + dom.domid, 0):
                try:
                    srv = await asyncio.start_server(handle, "127.0.0.1", port)
                    dom.console_port = srv.sockets[0].getsockname()[1]
                    dom.tcp_server = srv
                    dom.on_end.append(lambda d: srv.close())
                    return
                except OSError:
                    continue

    async def op_console(self, req, reader, writer):
        dom = self._dom(req)
        writer.write((json.dumps({"ok": True, "domid": dom.domid, "name": dom.name}) + "\n").encode())

        def sink(data: bytes) -> None:
            writer.write(FRAME.pack(b"D", len(data)) + data)

        done = asyncio.get_running_loop().create_future()

        def ended(d) -> None:
            if not done.done():
                done.set_result(d)

        if req.get("replay", True) and dom.console.history:
            sink(bytes(dom.console.history))
        dom.console.add_sink(sink)
        dom.console_clients = getattr(dom, "console_clients", []) + [sink]
        dom.on_end.append(ended)
        dom.console.poll()

        async def pump_input():
            try:
                while True:
                    hdr = await reader.readexactly(FRAME.size)
                    kind, n = FRAME.unpack(hdr)
                    data = await reader.readexactly(n)
                    if kind == b"I":
                        self.hv.domains.get(dom.domid, dom).console.write_input(data)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        inp = asyncio.get_running_loop().create_task(pump_input())
        try:
            await asyncio.wait([done, inp], return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                d = done.result()
                from .domain import EXIT_CODES
                end = {"reason": d.end_reason, "detail": getattr(d, "end_detail", ""),
                       "exit": EXIT_CODES.get(d.end_reason, 1), "report": d.crash_report}
                payload = json.dumps(end).encode()
                writer.write(FRAME.pack(b"E", len(payload)) + payload)
                await writer.drain()
        finally:
            inp.cancel()
            cur = self.hv.domains.get(dom.domid, dom)
            cur.console.remove_sink(sink)
            if ended in dom.on_end:
                dom.on_end.remove(ended)
            if sink in getattr(dom, "console_clients", []):
                dom.console_clients.remove(sink)
        return None

    async def op_list(self, req, r, w):
        return {"ok": True, "domains": [d.info() for d in sorted(self.hv.domains.values(),
                                                                   key=lambda d: d.domid)]}

    async def op_destroy(self, req, r, w):
        dom = self._dom(req)
        await dom.destroy("destroyed")
        return {"ok": True}

    async def op_pause(self, req, r, w):
        dom = self._dom(req)
        if not dom.alive:
            raise XenPVError(f"domain '{dom.name}' is not running")
        await dom.machine.pause()
        dom.state = "paused"
        return {"ok": True}

    async def op_unpause(self, req, r, w):
        dom = self._dom(req)
        if dom.state != "paused":
            raise XenPVError(f"domain '{dom.name}' is not paused")
        await dom.machine.resume()
        dom.state = "running"
        return {"ok": True}

    async def op_shutdown(self, req, r, w):
        dom = self._dom(req)
        kw = {"timeout": float(req["timeout"])} if req.get("timeout") is not None else {}
        return await dom.request_shutdown(req.get("reason", "poweroff"), req.get("wait", False), **kw)

    async def op_sysrq(self, req, r, w):
        dom = self._dom(req)
        return await dom.request_sysrq(req.get("key", ""))

    async def op_dmesg(self, req, r, w):
        lines = list(self.hv.dmesg_lines)
        if req.get("clear"):
            self.hv.dmesg_lines.clear()
        return {"ok": True, "lines": lines}

    async def op_info(self, req, r, w):
        from qemu_xenpv.machine.qemu import qemu_binary
        import subprocess
        try:
            qv = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True,
                                timeout=10).stdout.splitlines()[0]
        except Exception as e:
            qv = f"unavailable ({e})"
        accel, why = self.choose_accel(req.get("accel", "auto"))
        return {"ok": True, "info": {
            "qemu_xenpv": __version__, "xen_version": "4.17.0-qemu-xenpv (PV ABI of Xen 3.0+)",
            "xen_caps": "xen-3.0-x86_32p xen-3.0-x86_32", "qemu": qv,
            "accel": accel, "accel_reason": why, "domains": len(self.hv.domains),
            "run_dir": str(self.rd), "daemon_pid": os.getpid()}}

    async def op_wait(self, req, r, w):
        dom = self._dom(req)
        reason = await dom.wait()
        return {"ok": True, "reason": reason}

    async def op_quit(self, req, r, w):
        self.stop.set()
        return {"ok": True}


def serve_forever(rd: Path) -> None:
    logging.basicConfig(filename=str(rd / "daemon.log"), level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    d = Daemon(rd)
    signal.signal(signal.SIGTERM, lambda *a: d.hv.loop.call_soon_threadsafe(d.stop.set))
    try:
        d.hv.run(d.serve())
    finally:
        d.hv.shutdown()


def ensure_daemon(timeout: float = 15.0) -> Path:
    """Connectable control socket, starting a daemon if none is running."""
    rd = run_dir()
    path = socket_path(rd)
    if _ping(path):
        return path
    with open(rd / "lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if _ping(path):
            return path
        pid = os.fork()
        if pid == 0:                                # first child
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
                out = os.open(str(rd / "daemon.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(devnull, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                serve_forever(rd)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _ping(path):
                return path
            time.sleep(0.02)
    raise XenPVError(f"the qemu-xenpv daemon did not start (see {rd / 'daemon.log'})")


def _ping(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(str(path))
        s.sendall(b'{"op": "ping"}\n')
        ok = s.makefile().readline().startswith("{")
        s.close()
        return ok
    except OSError:
        return False
