"""qemu-xenpv: the command line, in the xm tradition.

    qemu-xenpv create CONFIG [-c] [var=value ...]
    qemu-xenpv list | console | destroy | shutdown | reboot | sysrq | pause | unpause
    qemu-xenpv xenstore-ls | xenstore-read | xenstore-write | xenstore-rm | xenstore-watch
    qemu-xenpv block-attach | block-detach | block-list
    qemu-xenpv run-test KERNEL|CONFIG ... [--timeout S] [--junit FILE] [-j N]
    qemu-xenpv dmesg | info | help

Every command is a call of the Python API (qemu_xenpv.api) and some
printing: one path, not two.  Every error is one line on stderr and a
non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
from typing import List, Optional

from .errors import XenPVError

EXIT_DOC = """exit status of 'create -c' (how the guest ended):
  0  powered off (or console detached with Ctrl-])
  1  qemu-xenpv error (bad config, bad kernel, QEMU failure at start)
  2  the guest crashed (SHUTDOWN_crash or a crash by the hypervisor)
  3  watchdog
  4  destroyed from outside ('qemu-xenpv destroy')
  5  QEMU died
"""
DETACH = 0x1D           # Ctrl-]


def Client(start: bool = False):
    """The daemon of this run directory, connected (an api.Host): with
    `start`, started if it is not running; without, an error if it is not."""
    from .api import Host
    return Host(start=start).connect()


def interactive_console(stream, out=None) -> int:
    """Attach the terminal to a console stream (api.ConsoleStream) until
    the guest ends (its exit code) or Ctrl-] (0)."""
    out = out or sys.stdout.buffer
    stdin = sys.stdin
    fd_in = stdin.fileno() if stdin and not stdin.closed else None
    tty_state = None
    if fd_in is not None and os.isatty(fd_in):
        import termios
        import tty
        tty_state = termios.tcgetattr(fd_in)
        tty.setraw(fd_in)
    try:
        while True:
            if not stream.has_buffered():
                fds = [stream] + ([fd_in] if fd_in is not None else [])
                ready, _, _ = select.select(fds, [], [])
                if fd_in is not None and fd_in in ready:
                    data = os.read(fd_in, 1024)
                    if not data:
                        fd_in = None
                    elif DETACH in data:
                        stream.send_input(data[:data.index(DETACH)])
                        return 0
                    else:
                        stream.send_input(data)
                    if stream not in ready:
                        continue
            for kind, payload in stream.events(0) or []:
                if kind == "data":
                    out.write(payload)
                    out.flush()
                elif kind == "end":
                    _restore(fd_in, tty_state)
                    tty_state = None
                    return _report_end(payload)
                elif kind == "closed":
                    return 1
    finally:
        _restore(fd_in, tty_state)


def _restore(fd, state) -> None:
    if state is not None:
        import termios
        termios.tcsetattr(fd, termios.TCSADRAIN, state)


def _report_end(end) -> int:
    """Say how the guest ended (an api.Ending); its exit status."""
    if end.reason == "crash":
        for line in end.crash_report:
            print(line, file=sys.stderr)
        print(f"qemu-xenpv: the guest crashed{': ' + end.detail if end.detail else ''}",
              file=sys.stderr)
    elif end.reason not in ("poweroff", None):
        print(f"qemu-xenpv: the guest ended: {end.reason}", file=sys.stderr)
    return end.exit_code


def cmd_create(args) -> int:
    from . import api
    from .config import parse_overrides
    cfg = api.load_config(args.config, parse_overrides(args.vars))
    if args.name:
        cfg.name = args.name
    from qemu_xenpv.machine.qemu import qemu_binary
    qemu_binary()
    for w in cfg.warnings:
        print(f"qemu-xenpv: warning: {w}", file=sys.stderr)
    if getattr(args, "pcap", None):
        _pcap_option(cfg, args.pcap)
    host = api.Host(start=True)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", api.StaleDaemonWarning)
        dom = host.create(cfg, console=args.console, accel=args.accel, gdb=args.gdb,
                          trace_hypercalls=args.trace_hypercalls, scramble_p2m=args.scramble_p2m,
                          doorbell=args.doorbell)
    for w in caught:
        if issubclass(w.category, api.StaleDaemonWarning):
            print(f"qemu-xenpv: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    where = f", console on port {dom.console_port}" if dom.console_port else ""
    gdb = f", gdb on port {dom.gdb_port} (waiting for it to continue)" if dom.gdb_port else ""
    print(f"Started domain {dom.name} (id={dom.domid}){where}{gdb}, "
          f"accel {dom.accel} ({dom.accel_reason})", file=sys.stderr)
    if args.console:
        return interactive_console(dom.console_stream)
    return 0


def _pcap_option(cfg, path: str) -> None:
    """--pcap FILE: capture vif 0 (and vif N into FILE.N)."""
    if not cfg.vifs:
        raise XenPVError("--pcap: the domain has no vif (add vif = [''] to the config)")
    path = os.path.abspath(path)
    for i, v in enumerate(cfg.vifs):
        v["pcap"] = path if i == 0 else f"{path}.{i}"


def cmd_network(args) -> int:
    c = Client()
    if args.cmd == "network-attach":
        resp = c.request({"op": "network-attach", "domain": args.domain,
                          "spec": ",".join(args.spec), "cwd": os.getcwd()})
        print(f"vif {resp['devid']} attached, mac {resp['mac']}", file=sys.stderr)
    elif args.cmd == "network-detach":
        resp = c.request({"op": "network-detach", "domain": args.domain,
                          "device": args.device, "force": args.force})
        if not resp.get("clean"):
            print("qemu-xenpv: warning: the frontend did not close in time: removed anyway",
                  file=sys.stderr)
    else:
        vifs = c.request({"op": "network-list", "domain": args.domain})["vifs"]
        if args.json:
            print(json.dumps(vifs, indent=2))
            return 0
        print(f"{'Dom':>4} {'Idx':>3} {'BE':>3} {'Mac Addr.':<17} {'State':>5} {'Evt-ch':>6} "
              f"{'Tx-/Rx-ring-ref':>15} {'Switch':<12} {'TX pkts':>8} {'RX pkts':>8} "
              f"{'Drop':>5} {'Spoof':>5}  BE-path")
        for v in vifs:
            refs = f"{v.get('tx_ring_ref') if v.get('tx_ring_ref') is not None else -1}/" \
                   f"{v.get('rx_ring_ref') if v.get('rx_ring_ref') is not None else -1}"
            print(f"{v['domid']:>4} {v['devid']:>3} {0:>3} {v['mac']:<17} {v['state']:>5} "
                  f"{v.get('evtchn') or -1:>6} {refs:>15} {v.get('switch') or '-':<12} "
                  f"{v['tx_packets']:>8} {v['rx_packets']:>8} {v['rx_dropped']:>5} "
                  f"{v['spoofed']:>5}  {v['be_path']}")
    return 0


def cmd_block(args) -> int:
    c = Client()
    if args.cmd == "block-attach":
        resp = c.request({"op": "block-attach", "domain": args.domain, "spec": args.spec,
                          "cwd": os.getcwd()})
        print(f"disk {resp['vdev']} ({resp['devid']}) attached", file=sys.stderr)
    elif args.cmd == "block-detach":
        resp = c.request({"op": "block-detach", "domain": args.domain,
                          "device": args.device, "force": args.force})
        if not resp.get("clean"):
            print("qemu-xenpv: warning: the frontend did not close in time: removed anyway",
                  file=sys.stderr)
    else:
        disks = c.request({"op": "block-list", "domain": args.domain})["disks"]
        if args.json:
            print(json.dumps(disks, indent=2))
            return 0
        print(f"{'Domain':<20} {'Vdev':<6} {'Dev':>6} {'BE':>3} {'State':>5} {'Mode':>4} "
              f"{'Format':<6} {'Sectors':>10}  Target")
        for d in disks:
            print(f"{d['domain']:<20} {d['vdev']:<6} {d['devid']:>6} {0:>3} {d['state']:>5} "
                  f"{d['mode']:>4} {d['format']:<6} {d['sectors']:>10}  {d['target']}")
    return 0


def cmd_console(args) -> int:
    dom = Client().domain(args.domain)
    return interactive_console(dom.attach_console().stream)


def cmd_list(args) -> int:
    from .api import Host
    doms = Host(start=False).domains()
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
        dom = Client().domain(args.domain)
        message = ""
        if op in ("shutdown", "reboot"):
            message = dom.shutdown(wait=args.wait, timeout=args.timeout,
                                   reason="poweroff" if op == "shutdown" else "reboot")
        elif op == "sysrq":
            dom.sysrq(args.key)
        else:
            getattr(dom, op)()                  # destroy, pause, unpause
        if message:
            print(message, file=sys.stderr)
        return 0
    return run


def cmd_xenstore(args) -> int:
    import errno as errno_mod
    from .api import Host
    from .xenstore import XenStoreError
    c = Host(start=False).xenstore_client()
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
    from .api import Host
    for line in Host(start=False).dmesg(clear=args.clear):
        print(line)
    return 0


def cmd_info(args) -> int:
    info = Client(start=True).info(accel=args.accel)
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}} : {v}")
    return 0


def cmd_run_test(args) -> int:
    from .runtest import main_from_args
    return main_from_args(args)


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
    c.add_argument("--pcap", metavar="FILE",
                   help="write every frame of vif 0 to FILE in pcap format (vif N: FILE.N)")
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
    s = sub.add_parser("network-attach", help="add a vif to a running domain")
    s.add_argument("domain")
    s.add_argument("spec", nargs="*", metavar="key=value",
                   help="as in the config's vif list: mac=, bridge=, ip=, pcap=")
    s.set_defaults(fn=cmd_network)
    s = sub.add_parser("network-detach", help="remove a vif from a running domain")
    s.add_argument("domain")
    s.add_argument("device", help="the vif's index (devid) or MAC")
    s.add_argument("--force", action="store_true", help="do not wait for the frontend")
    s.set_defaults(fn=cmd_network)
    s = sub.add_parser("network-list", help="the vifs of a domain (all domains without one)")
    s.add_argument("domain", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_network)
    s = sub.add_parser("block-attach", help="add a disk to a running domain")
    s.add_argument("domain")
    s.add_argument("spec", help="as in the config's disk list: 'file:/img,xvdb,w' or "
                                "'format=qcow2,vdev=xvdc,access=w,target=/img.qcow2'")
    s.set_defaults(fn=cmd_block)
    s = sub.add_parser("block-detach", help="remove a disk from a running domain")
    s.add_argument("domain")
    s.add_argument("device", help="the disk's virtual device (xvdb) or number (51728)")
    s.add_argument("--force", action="store_true", help="do not wait for the frontend")
    s.set_defaults(fn=cmd_block)
    s = sub.add_parser("block-list", help="the disks of a domain (all domains without one)")
    s.add_argument("domain", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_block)
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
    from .runtest import add_parser as add_run_test
    add_run_test(sub).set_defaults(fn=cmd_run_test)
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
