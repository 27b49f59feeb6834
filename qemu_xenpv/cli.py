"""qemu-xenpv: the command line, in the xm tradition.

    qemu-xenpv create CONFIG [-c] [var=value ...]
    qemu-xenpv list | console | destroy | shutdown | reboot | sysrq | pause | unpause
    qemu-xenpv xenstore-ls | xenstore-read | xenstore-write | xenstore-rm | xenstore-watch
    qemu-xenpv dmesg | info | help

Every error is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
from typing import List, Optional

from .errors import XenPVError, ConfigError

EXIT_DOC = """exit status of 'create -c' (how the guest ended):
  0  powered off (or console detached with Ctrl-])
  1  qemu-xenpv error (bad config, bad kernel, QEMU failure at start)
  2  the guest crashed (SHUTDOWN_crash or a crash by the hypervisor)
  3  watchdog
  4  destroyed from outside ('qemu-xenpv destroy')
  5  QEMU died
"""
DETACH = 0x1D           # Ctrl-]


class Client:
    def __init__(self, start: bool = False):
        from .daemon import ensure_daemon, socket_path, _ping
        path = ensure_daemon() if start else socket_path()
        if not start and not _ping(path):
            raise XenPVError("no qemu-xenpv domains are running (no daemon)")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buf = b""          # bytes received after the last reply line

    def request(self, req: dict) -> dict:
        self.sock.sendall((json.dumps(req) + "\n").encode())
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise XenPVError("the qemu-xenpv daemon closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        resp = json.loads(line)
        if not resp.get("ok"):
            raise XenPVError(resp.get("error", "request failed"))
        return resp

    def console(self, domain: str, out=None) -> int:
        """Attach to a console until the guest ends (its exit code) or Ctrl-]."""
        from .daemon import FRAME
        self.request({"op": "console", "domain": domain})
        out = out or sys.stdout.buffer
        stdin = sys.stdin
        fd_in = stdin.fileno() if stdin and not stdin.closed else None
        tty_state = None
        if fd_in is not None and os.isatty(fd_in):
            import termios
            import tty
            tty_state = termios.tcgetattr(fd_in)
            tty.setraw(fd_in)
        buf, self.buf = self.buf, b""
        try:
            first = True
            while True:
                fds = [self.sock] + ([fd_in] if fd_in is not None else [])
                ready, _, _ = select.select(fds, [], [], 0 if first and buf else None)
                first = False
                if fd_in is not None and fd_in in ready:
                    data = os.read(fd_in, 1024)
                    if not data:
                        fd_in = None
                    elif DETACH in data:
                        before = data[:data.index(DETACH)]
                        if before:
                            self.sock.sendall(FRAME.pack(b"I", len(before)) + before)
                        return 0
                    else:
                        self.sock.sendall(FRAME.pack(b"I", len(data)) + data)
                if self.sock in ready:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return 1
                    buf += chunk
                if buf:
                    while len(buf) >= FRAME.size:
                        kind, n = FRAME.unpack(buf[:FRAME.size])
                        if len(buf) < FRAME.size + n:
                            break
                        payload = buf[FRAME.size:FRAME.size + n]
                        buf = buf[FRAME.size + n:]
                        if kind == b"D":
                            out.write(payload)
                            out.flush()
                        elif kind == b"E":
                            end = json.loads(payload)
                            self._restore(fd_in, tty_state)
                            tty_state = None
                            return self._report_end(end)
        finally:
            self._restore(fd_in, tty_state)

    @staticmethod
    def _restore(fd, state) -> None:
        if state is not None:
            import termios
            termios.tcsetattr(fd, termios.TCSADRAIN, state)

    @staticmethod
    def _report_end(end: dict) -> int:
        reason = end.get("reason")
        if reason == "crash":
            for line in end.get("report") or []:
                print(line, file=sys.stderr)
            detail = end.get("detail")
            print(f"qemu-xenpv: the guest crashed{': ' + detail if detail else ''}",
                  file=sys.stderr)
        elif reason not in ("poweroff", None):
            print(f"qemu-xenpv: the guest ended: {reason}", file=sys.stderr)
        return int(end.get("exit", 1))

    def close(self) -> None:
        self.sock.close()


def _domain_config(args) -> "DomainConfig":
    from .config import load_config_file, parse_overrides
    cfg = load_config_file(args.config, parse_overrides(args.vars))
    cfg.load_images()
    if args.name:
        cfg.name = args.name
    return cfg


def cmd_create(args) -> int:
    from qemu_xenpv.machine.qemu import qemu_binary
    from . import paths
    cfg = _domain_config(args)
    qemu_binary()
    for p in (paths.shim_elf(), paths.rom_bin()):
        if not p.exists():
            raise XenPVError(f"firmware {p} is not built: run 'make' in the source tree")
    for w in cfg.warnings:
        print(f"qemu-xenpv: warning: {w}", file=sys.stderr)
    c = Client(start=True)
    opts = {"accel": args.accel, "gdb": args.gdb, "trace": os.path.abspath(args.trace_hypercalls)
            if args.trace_hypercalls else None, "scramble_p2m": args.scramble_p2m,
            "doorbell": args.doorbell}
    d = cfg.to_dict()
    resp = c.request({"op": "create", "config": d, "options": opts, "cwd": os.getcwd()})
    where = f", console on port {resp['console_port']}" if resp.get("console_port") else ""
    gdb = f", gdb on port {resp['gdb_port']} (waiting for it to continue)" if resp.get("gdb_port") else ""
    print(f"Started domain {resp['name']} (id={resp['domid']}){where}{gdb}, "
          f"accel {resp['accel']} ({resp['accel_reason']})", file=sys.stderr)
    if args.console:
        return c.console(resp["name"])
    return 0


def cmd_console(args) -> int:
    return Client().console(args.domain)


def cmd_list(args) -> int:
    try:
        doms = Client().request({"op": "list"})["domains"]
    except XenPVError as e:
        if "no daemon" in str(e):
            doms = []
        else:
            raise
    if args.json:
        print(json.dumps(doms, indent=2))
        return 0
    print(f"{'Name':<32} {'ID':>5} {'Mem':>5} {'VCPUs':>5} {'State':>8} {'Time(s)':>8} "
          f"{'Console':>8}  Accel")
    for d in doms:
        print(f"{d['name']:<32} {d['domid']:>5} {d['memory']:>5} {d['vcpus']:>5} "
              f"{d['flags']:>8} {d['time']:>8.1f} {d['console_port'] or '-':>8}  {d['accel']}")
    return 0


def _simple(op: str):
    def run(args) -> int:
        req = {"op": op, "domain": args.domain}
        if op == "shutdown":
            req["wait"] = args.wait
        if op == "reboot":
            req = {"op": "shutdown", "domain": args.domain, "reason": "reboot", "wait": args.wait}
        if op in ("shutdown", "reboot") and args.timeout is not None:
            req["timeout"] = args.timeout
        if op == "sysrq":
            req["key"] = args.key
        resp = Client().request(req)
        if resp.get("message"):
            print(resp["message"], file=sys.stderr)
        return 0
    return run


def _xs_client():
    """A connection to the daemon's xenstored socket (xs_wire, as domain 0)."""
    from .daemon import _ping, run_dir, socket_path
    from .xenstore.client import XsClient
    from .xenstored import SOCKET_NAME
    if not _ping(socket_path()):
        raise XenPVError("no qemu-xenpv domains are running (no daemon, so no XenStore)")
    try:
        return XsClient(run_dir() / SOCKET_NAME, timeout=None)
    except OSError as e:
        raise XenPVError(f"cannot reach xenstored: {e}") from None


def cmd_xenstore(args) -> int:
    import errno as errno_mod
    from .xenstore import XenStoreError
    c = _xs_client()
    path = getattr(args, "path", "/")
    try:
        if args.cmd == "xenstore-read":
            sys.stdout.buffer.write(c.read(path) + b"\n")
        elif args.cmd == "xenstore-write":
            c.write(path, args.value)
        elif args.cmd == "xenstore-rm":
            c.rm(path)
        elif args.cmd == "xenstore-ls":
            for line in c.tree(path, perms=args.perms):
                print(line)
        elif args.cmd == "xenstore-watch":
            c.watch(path, "qemu-xenpv")
            seen = 0
            while args.count is None or seen < args.count:
                ev = c.read_watch()
                print(ev[0], flush=True)
                seen += 1
    except XenStoreError as e:
        code = getattr(errno_mod, e.errno, None)
        why = f" ({os.strerror(code)})" if code else ""
        raise XenPVError(f"{args.cmd} {path}: {e.errno}{why}") from None
    except ConnectionError:
        raise XenPVError(f"{args.cmd}: the qemu-xenpv daemon went away") from None
    finally:
        c.close()
    return 0


def cmd_dmesg(args) -> int:
    try:
        lines = Client().request({"op": "dmesg", "clear": args.clear})["lines"]
    except XenPVError as e:
        if "no daemon" not in str(e):
            raise
        from .daemon import run_dir
        p = run_dir() / "xenpv.log"
        lines = p.read_text().splitlines() if p.exists() else []
    for l in lines:
        print(l)
    return 0


def cmd_info(args) -> int:
    info = Client(start=True).request({"op": "info", "accel": args.accel})["info"]
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}} : {v}")
    return 0


def cmd_daemon(args) -> int:
    from .daemon import serve_forever, run_dir
    serve_forever(run_dir())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qemu-xenpv",
                                description="Xen guests on a stock QEMU, with no Xen installed.",
                                epilog=EXIT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    c = sub.add_parser("create", help="create a domain from a config file",
                       epilog=EXIT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("config", help="xm/xl-style domain config file")
    c.add_argument("vars", nargs="*", metavar="var=value", help="override config variables")
    c.add_argument("-c", dest="console", action="store_true",
                   help="attach to the console; exit when the guest ends (Ctrl-] detaches)")
    c.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    c.add_argument("--gdb", type=int, metavar="PORT",
                   help="QEMU gdbstub on 127.0.0.1:PORT; the guest waits until gdb continues")
    c.add_argument("--trace-hypercalls", metavar="FILE", help="JSON-lines hypercall trace")
    c.add_argument("--scramble-p2m", action="store_true",
                   help="shuffle the pseudo-physical to machine map (deterministic)")
    c.add_argument("--name", help="override the domain name")
    c.add_argument("--doorbell", choices=("ivshmem", "port", "poll"), default="ivshmem",
                   help=argparse.SUPPRESS)
    c.set_defaults(fn=cmd_create)

    l = sub.add_parser("list", help="list domains")
    l.add_argument("--json", action="store_true")
    l.set_defaults(fn=cmd_list)
    for name, helptext in (("console", "attach to a domain's console (Ctrl-] detaches)"),
                           ("destroy", "stop a domain now"),
                           ("pause", "pause a domain"), ("unpause", "unpause a domain")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("domain", help="name or id")
        s.set_defaults(fn=cmd_console if name == "console" else _simple(name))
    for name, helptext in (("shutdown", "ask a domain to power off (control/shutdown)"),
                           ("reboot", "ask a domain to reboot")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("domain")
        s.add_argument("-w", "--wait", action="store_true", help="wait until it has ended")
        s.add_argument("-t", "--timeout", type=float, metavar="SECONDS",
                       help="how long the guest has to acknowledge (default 60, as xl)")
        s.set_defaults(fn=_simple(name))
    for name, helptext in (("xenstore-ls", "list a XenStore subtree"),
                           ("xenstore-read", "print the value of a XenStore node"),
                           ("xenstore-write", "write a XenStore node"),
                           ("xenstore-rm", "remove a XenStore node and its children"),
                           ("xenstore-watch", "print the paths of watch events (Ctrl-C stops)")):
        s = sub.add_parser(name, help=helptext)
        if name == "xenstore-ls":
            s.add_argument("path", nargs="?", default="/")
            s.add_argument("-p", dest="perms", action="store_true", help="show permissions")
        else:
            s.add_argument("path")
        if name == "xenstore-write":
            s.add_argument("value")
        if name == "xenstore-watch":
            s.add_argument("-n", dest="count", type=int, metavar="COUNT",
                           help="exit after COUNT events (the first fires at once)")
        s.set_defaults(fn=cmd_xenstore)
    s = sub.add_parser("sysrq", help="send a sysrq key (control/sysrq)")
    s.add_argument("domain")
    s.add_argument("key")
    s.set_defaults(fn=_simple("sysrq"))
    d = sub.add_parser("dmesg", help="the hypervisor log")
    d.add_argument("-c", "--clear", action="store_true")
    d.set_defaults(fn=cmd_dmesg)
    i = sub.add_parser("info", help="about this hypervisor and the accelerator it chooses")
    i.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    i.set_defaults(fn=cmd_info)
    h = sub.add_parser("help", help="this help")
    h.set_defaults(fn=lambda a: (p.print_help(), 0)[1])
    dm = sub.add_parser("daemon", help=argparse.SUPPRESS)
    dm.set_defaults(fn=cmd_daemon)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 1
    try:
        return args.fn(args)
    except XenPVError as e:
        print(f"qemu-xenpv: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
