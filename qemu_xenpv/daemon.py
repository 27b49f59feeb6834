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
import collections
import fcntl
import itertools
import json
import logging
import os
import signal
import struct
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
ENDED_KEPT = 64                 # how many ended domains `wait` still knows (by serial)

# Where the daemon lives and how clients start it: qemu_xenpv.rundir (light:
# the CLI imports it without asyncio); re-exported here.
from .rundir import (DAEMON_START_TIMEOUT, _log_tail, _ping, console_log_path,  # noqa: E402,F401
                     ensure_daemon, run_dir, socket_path)


class Daemon:
    def __init__(self, rd: Path):
        from .hypervisor import Hypervisor
        self.rd = rd
        self.hv = Hypervisor(str(rd / "xenpv.log"))
        self.clients = 0
        self.last_activity = time.monotonic()
        self.stop = asyncio.Event()
        self.accel_choice = None
        self.ready_fd: Optional[int] = None
        # how each domain ended, by serial (a number per create, kept across
        # reboots): `wait` answers even once the domain is gone
        self.ended: "collections.OrderedDict[int, dict]" = collections.OrderedDict()
        self._serials = itertools.count(1)
        self.hv.on_domain_end.append(self._domain_ended)
        self.hv.on_domain_restart.append(self._on_restart)

    def _domain_ended(self, dom) -> None:
        self._touch()
        serial = getattr(dom, "xenpv_serial", None)
        if serial is not None:
            self.ended[serial] = self.end_record(dom)
            self.ended.move_to_end(serial)
            while len(self.ended) > ENDED_KEPT:
                self.ended.popitem(last=False)

    @staticmethod
    def end_record(dom) -> dict:
        """How `dom` ended: reason, detail, exit status of `create -c`, crash report."""
        from .domain import EXIT_CODES
        reason = dom.end_reason or "destroyed"
        return {"reason": reason, "detail": getattr(dom, "end_detail", "") or "",
                "exit": EXIT_CODES.get(reason, 1), "report": list(dom.crash_report or []),
                "name": dom.name, "domid": dom.domid,
                "serial": getattr(dom, "xenpv_serial", None)}

    def is_over(self, dom) -> bool:
        """Has `dom` ended for good: torn down (and not being restarted), or
        shut down and preserved."""
        if dom.domid in getattr(self.hv, "_restarting", {}):
            return False
        if dom.state == "dead":
            return True
        if dom.end_reason and dom.state in ("shutdown", "crashed"):
            cfg = dom.config
            action = {"poweroff": cfg.on_poweroff, "reboot": cfg.on_reboot,
                      "crash": cfg.on_crash}.get(dom.end_reason, "destroy")
            return action == "preserve"
        return False

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
        from . import paths
        paths.code_id()                 # what we run, fixed now (ping reports it)
        path = socket_path(self.rd)
        if path.exists():
            path.unlink()
        server = await asyncio.start_unix_server(self._client, path=str(path))
        os.chmod(path, 0o600)
        st = path.stat()
        self._sock_id = (st.st_ino, st.st_ctime_ns)
        self.hv.dmesg(f"(XEN) control socket {path}")
        from .xenstored import SOCKET_NAME
        await self.hv.xenstore.serve_socket(self.rd / SOCKET_NAME)
        self._signal_ready(b"ready\n")
        retired = False
        try:
            while not self.stop.is_set():
                await asyncio.sleep(0.25)
                idle = not self.hv.domains and self.clients == 0 and not self.hv.xenstore.clients
                if idle and time.monotonic() - self.last_activity > IDLE_EXIT_SECONDS:
                    if await self._retire(server):
                        retired = True
                        break
        finally:
            if not retired:                     # quit (or a signal): domains go first,
                server.close()                  # so a client waiting for the socket to
                try:                            # vanish knows they are gone
                    await self.hv.destroy_all()
                finally:
                    self._unlink_own_socket(path)
                    await self.hv.xenstore.close_socket()
            await self.hv.destroy_all()

    async def _retire(self, server) -> bool:
        """Stop being reachable, under the run directory's start lock: a
        client starting a new daemon holds it until that daemon answers, so
        we never remove the socket of our successor (the old daemon used
        to, and the client then waited 15 s for a socket that was gone)."""
        try:
            lockf = open(self.rd / "lock", "a")
        except OSError:
            return True
        try:
            try:
                fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False                    # a client is starting or finding us
            if self.clients or self.hv.domains:
                return False
            server.close()
            self._unlink_own_socket(socket_path(self.rd))
            await self.hv.xenstore.close_socket()
            return True
        finally:
            lockf.close()

    def _unlink_own_socket(self, path: Path) -> None:
        try:
            st = path.stat()
            if (st.st_ino, st.st_ctime_ns) == getattr(self, "_sock_id", None):
                path.unlink()
        except FileNotFoundError:
            pass

    def _signal_ready(self, msg: bytes) -> None:
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, msg)
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None

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
        # "serial" (the API sends it): the very domain that create made, not
        # a later one of the same name
        if d is None or (req.get("serial") is not None and
                         getattr(d, "xenpv_serial", None) != req["serial"]):
            raise XenPVError(f"domain '{ref}' does not exist")
        return d

    # ---- operations ----
    async def op_ping(self, req, r, w):
        from . import paths
        return {"ok": True, "pid": os.getpid(), "code": paths.code_id(),
                "domains": len(self.hv.domains)}

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
        # From here to the reply nothing may await before the console is
        # hooked up: a guest can end within milliseconds (create -c used to
        # attach in a second request and could miss it).
        dom.xenpv_serial = next(self._serials)
        self._open_console_log(dom)
        session = ConsoleSession(self, dom, w) if req.get("attach") else None
        await self._start_tcp_console(dom)
        reply = {"ok": True, "domid": dom.domid, "name": dom.name, "accel": accel,
                 "accel_reason": why, "console_port": dom.console_port,
                 "gdb_port": dom.gdb_port, "warnings": cfg.warnings,
                 "serial": dom.xenpv_serial,
                 "console_log": str(console_log_path(self.rd, dom.name))}
        if session is None:
            return reply
        return await session.run(r, reply)

    def _open_console_log(self, dom) -> None:
        """<run dir>/console/<name>.log: everything the guest printed so far
        (the history), then every byte as it comes."""
        logf = open(console_log_path(self.rd, dom.name), "ab", buffering=0)
        if dom.console.history:
            logf.write(bytes(dom.console.history))
        dom.console_logfile = logf
        dom.console.add_sink(logf.write)
        dom.on_end.append(lambda d: logf.close())

    def _on_restart(self, old, new) -> None:
        new.xenpv_serial = getattr(old, "xenpv_serial", None)
        new.console_logfile = getattr(old, "console_logfile", None)
        if new.console_logfile and not new.console_logfile.closed:
            new.console.add_sink(new.console_logfile.write)
        attached_meanwhile = list(getattr(new, "console_clients", []))   # during its start
        for sink in getattr(old, "console_clients", []):
            if sink not in new.console.sinks:
                new.console.add_sink(sink)
        new.console_clients = getattr(old, "console_clients", []) + \
            [s for s in attached_meanwhile if s not in getattr(old, "console_clients", [])]
        new.tcp_server = getattr(old, "tcp_server", None)

    async def _start_tcp_console(self, dom) -> None:
        """The seeds' console on TCP port 9600 + domid (loopback only)."""
        if True:
            clients = []

            async def handle(reader, writer):
                sink = writer.write
                dom_now = self.hv.domains.get(dom.domid, dom)
                dom_now.console.add_sink(sink)
                dom_now.console_clients = getattr(dom_now, "console_clients", []) + [sink]
                clients.append(writer)
                try:
                    while True:
                        data = await reader.read(1024)
                        if not data:
                            break
                        self.hv.domains.get(dom.domid, dom).console.write_input(data)
                finally:
                    cur = self.hv.domains.get(dom.domid, dom)
                    cur.console.remove_sink(sink)
                    if sink in getattr(cur, "console_clients", []):
                        cur.console_clients.remove(sink)
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
        session = ConsoleSession(self, dom, writer, replay=req.get("replay", True))
        return await session.run(reader, {"ok": True, "domid": dom.domid, "name": dom.name,
                                          "serial": getattr(dom, "xenpv_serial", None)})

    async def op_list(self, req, r, w):
        return {"ok": True, "domains": [dict(d.info(), serial=getattr(d, "xenpv_serial", None))
                                        for d in sorted(self.hv.domains.values(),
                                                        key=lambda d: d.domid)]}

    async def op_destroy(self, req, r, w):
        dom = self._dom(req)
        await self.hv.destroy_domain(dom, "destroyed")      # also while it reboots
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
        """Until the domain has ended (torn down, or shut down and preserved):
        how it ended.  With "serial" (from create) it also answers for a
        domain that is already gone; with "timeout" it may answer
        {"ended": false}."""
        serial = req.get("serial")
        if serial is not None and serial in self.ended:
            return dict(self.ended[serial], ok=True, ended=True)
        dom = self._dom(req)
        if self.is_over(dom):
            return dict(self.end_record(dom), ok=True, ended=True)
        fut = asyncio.get_running_loop().create_future()

        def ended(d) -> None:
            if not fut.done():
                fut.set_result(self.end_record(d))
        dom.on_end.append(ended)
        try:
            timeout = req.get("timeout")
            rec = await asyncio.wait_for(fut, None if timeout is None else float(timeout))
        except asyncio.TimeoutError:
            return {"ok": True, "ended": False}
        finally:
            if ended in dom.on_end:
                dom.on_end.remove(ended)
        return dict(rec, ok=True, ended=True)

    # ---- network (devices/netback.py) ----
    async def op_network_attach(self, req, r, w):
        from qemu_xenpv.devices import netback
        dom = self._dom(req)
        dev = await netback.attach(dom, req.get("spec", ""), req.get("cwd"))
        return {"ok": True, "devid": dev.devid, "mac": dev.mac}

    async def op_network_detach(self, req, r, w):
        from qemu_xenpv.devices import netback
        dom = self._dom(req)
        clean = await netback.detach(dom, str(req.get("device")), bool(req.get("force")))
        return {"ok": True, "clean": clean}

    async def op_network_list(self, req, r, w):
        from qemu_xenpv.devices import netback
        doms = [self._dom(req)] if req.get("domain") is not None else \
            sorted(self.hv.domains.values(), key=lambda d: d.domid)
        return {"ok": True, "vifs": [v for d in doms for v in netback.list_vifs(d)]}

    # ---- disks (devices/blkback.py) ----
    async def op_block_attach(self, req, r, w):
        from qemu_xenpv.devices import blkback
        dom = self._dom(req)
        dev = await blkback.block_attach(dom, str(req.get("spec", "")), req.get("cwd"))
        return {"ok": True, "devid": dev.devid, "vdev": dev.spec.vdev}

    async def op_block_detach(self, req, r, w):
        from qemu_xenpv.devices import blkback
        dom = self._dom(req)
        clean = await blkback.block_detach(dom, str(req.get("device")), bool(req.get("force")))
        return {"ok": True, "clean": clean}

    async def op_block_list(self, req, r, w):
        doms = [self._dom(req)] if req.get("domain") is not None else \
            sorted(self.hv.domains.values(), key=lambda d: d.domid)
        return {"ok": True, "disks": [dict(dev.info(), domain=d.name) for d in doms
                                      if getattr(d, "devices", None) is not None
                                      for dev in d.devices.of_kind("vbd")]}

    async def op_quit(self, req, r, w):
        self.stop.set()
        return {"ok": True}


class ConsoleSession:
    """A control connection switched to console frames: D (guest output) and
    E (how the guest ended, JSON) to the client, I (input) from it.

    The sinks are registered when the session is made, synchronously, so
    nothing the guest prints and no end is missed; frames wait until run()
    has written the reply line.  A domain that is already over gets its
    history and its end at once."""

    def __init__(self, daemon: "Daemon", dom, writer: asyncio.StreamWriter,
                 replay: bool = True):
        self.daemon = daemon
        self.dom = dom
        self.writer = writer
        self.done = asyncio.get_running_loop().create_future()
        self.frames: list = []
        self.live = False
        self.hooked = False
        if replay and dom.console is not None and dom.console.history:
            self.sink(bytes(dom.console.history))
        if daemon.is_over(dom):
            self.done.set_result(daemon.end_record(dom))
            return
        dom.console.add_sink(self.sink)
        dom.console_clients = getattr(dom, "console_clients", []) + [self.sink]
        dom.on_end.append(self.ended)
        self.hooked = True

    def _frame(self, frame: bytes) -> None:
        if self.live:
            self.writer.write(frame)
        else:
            self.frames.append(frame)

    def sink(self, data: bytes) -> None:
        self._frame(FRAME.pack(b"D", len(data)) + data)

    def ended(self, d) -> None:
        if not self.done.done():
            self.done.set_result(self.daemon.end_record(d))

    async def run(self, reader: asyncio.StreamReader, reply: dict) -> None:
        w = self.writer
        w.write((json.dumps(reply) + "\n").encode())
        for f in self.frames:
            w.write(f)
        self.frames.clear()
        self.live = True
        hv = self.daemon.hv
        dom = self.dom
        if self.hooked and dom.alive:
            dom.console.poll()

        async def pump_input():
            try:
                while True:
                    hdr = await reader.readexactly(FRAME.size)
                    kind, n = FRAME.unpack(hdr)
                    data = await reader.readexactly(n)
                    if kind == b"I":
                        cur = hv.domains.get(dom.domid, dom)
                        if cur.console is not None:
                            cur.console.write_input(data)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        inp = asyncio.get_running_loop().create_task(pump_input())
        try:
            await asyncio.wait([self.done, inp], return_when=asyncio.FIRST_COMPLETED)
            if self.done.done():
                payload = json.dumps(self.done.result()).encode()
                w.write(FRAME.pack(b"E", len(payload)) + payload)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            inp.cancel()
            if self.hooked:
                cur = hv.domains.get(dom.domid, dom)
                if cur.console is not None:
                    cur.console.remove_sink(self.sink)
                if self.ended in dom.on_end:
                    dom.on_end.remove(self.ended)
                for d in {id(dom): dom, id(cur): cur}.values():
                    if self.sink in getattr(d, "console_clients", []):
                        d.console_clients.remove(self.sink)
        return None


def serve_forever(rd: Path, ready_fd: Optional[int] = None) -> None:
    logging.basicConfig(filename=str(rd / "daemon.log"), level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    d = Daemon(rd)
    d.ready_fd = ready_fd
    signal.signal(signal.SIGTERM, lambda *a: d.hv.loop.call_soon_threadsafe(d.stop.set))
    try:
        d.hv.run(d.serve())
    finally:
        d.hv.shutdown()


def main(argv: Optional[list] = None) -> int:
    """The daemon process: ``python -c 'from qemu_xenpv.daemon import main; main()'``."""
    import argparse
    ap = argparse.ArgumentParser(prog="qemu-xenpv-daemon")
    ap.add_argument("--run-dir", help="the run directory (default: QEMU_XENPV_RUNDIR or ...)")
    ap.add_argument("--ready-fd", type=int, help="write 'ready' here once listening")
    ap.add_argument("--detach", action="store_true",
                    help="fork: the starting process exits at once (no zombie to reap)")
    args = ap.parse_args(argv)
    rd = Path(args.run_dir) if args.run_dir else run_dir()
    rd.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.detach and os.fork() != 0:          # single-threaded here: fork is safe
        os._exit(0)
    serve_forever(rd, args.ready_fd)
    return 0
