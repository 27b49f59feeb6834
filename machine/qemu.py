"""One QEMU process per domain: its command line, its lifetime, QMP.

Everything QEMU talks to is a file descriptor we hand it: the guest RAM
(a memfd), the ivshmem server socket, the QMP socket, the optional
debugcon doorbell.  No paths are created, so nothing can be left behind.
Like QEMU's own python/qemu machine.py, a launch failure raises one
exception that carries the command line and QEMU's own message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from enum import Enum
from typing import List, Optional

from qemu.qmp import QMPClient

from qemu_xenpv.errors import MachineError
from . import ivshmem
from .ram import GuestRAM

log = logging.getLogger("qemu_xenpv.machine")

DEBUGCON_PORT = 0x402


def qemu_binary() -> str:
    exe = os.environ.get("QEMU_XENPV_QEMU", "qemu-system-i386")
    path = shutil.which(exe)
    if not path:
        raise MachineError(f"{exe} not found on PATH: install Debian's qemu-system-x86 "
                           "(run 'make setup') or set QEMU_XENPV_QEMU")
    return path


class Runstate(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class QemuMachine:
    """A headless i386 PC whose RAM is our GuestRAM."""

    def __init__(self, ram: GuestRAM, bios: str, name: str, accel: str = "tcg",
                 vectors: int = 1, doorbell: str = "ivshmem", gdb_port: Optional[int] = None,
                 gdb_wait: bool = False, extra_args: Optional[List[str]] = None,
                 smp: int = 1):
        self.ram = ram
        self.bios = bios
        self.name = name
        self.accel = accel
        self.doorbell = doorbell
        self.gdb_port = gdb_port
        self.gdb_wait = gdb_wait
        self.extra_args = extra_args or []
        self.smp = smp
        self.ivshmem = ivshmem.IvshmemServer(vectors=vectors)
        self.qmp_ours, self.qmp_theirs = socket.socketpair()
        self.dbg_ours = self.dbg_theirs = None
        if doorbell == "port":
            self.dbg_ours, self.dbg_theirs = socket.socketpair()
            self.dbg_ours.setblocking(False)
        self.proc: Optional[subprocess.Popen] = None
        self.qmp: Optional[QMPClient] = None
        self.state = Runstate.NEW
        self.stderr_lines: List[str] = []
        self.args: List[str] = []
        self._lock = threading.Lock()

    # ---- command line ----
    def command_line(self) -> List[str]:
        mb = self.ram.size >> 20
        args = [qemu_binary(), "-name", f"{self.name},debug-threads=on",
                "-nodefaults", "-nographic", "-no-user-config", "-no-reboot",
                "-accel", self.accel,
                "-cpu", "qemu32" if self.accel == "tcg" else "qemu32,pni=off",
                "-m", f"{mb}M", "-smp", str(self.smp),
                "-object", f"memory-backend-file,id=ram,size={mb}M,"
                           f"mem-path=/proc/self/fd/{self.ram.fd},share=on",
                "-machine", "pc,memory-backend=ram",
                "-bios", self.bios,
                "-chardev", f"socket,id=ivs,fd={self.ivshmem.qemu_fd()}",
                "-device", f"ivshmem-doorbell,chardev=ivs,vectors={self.ivshmem.vectors}",
                "-chardev", f"socket,id=qmp,fd={self.qmp_theirs.fileno()}",
                "-mon", "chardev=qmp,mode=control"]
        if self.dbg_theirs is not None:
            args += ["-chardev", f"socket,id=dbg,fd={self.dbg_theirs.fileno()}",
                     "-device", f"isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=dbg"]
        if self.gdb_port is not None:
            args += ["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"]
        if self.gdb_wait:
            args += ["-S"]
        return args + self.extra_args

    def _pass_fds(self) -> List[int]:
        fds = [self.ram.fd, self.ivshmem.qemu_fd(), self.qmp_theirs.fileno()]
        if self.dbg_theirs is not None:
            fds.append(self.dbg_theirs.fileno())
        return fds

    # ---- lifetime ----
    def launch(self) -> None:
        self.args = self.command_line()
        log.debug("launch: %s", " ".join(self.args))
        try:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         pass_fds=self._pass_fds(), start_new_session=True)
        except OSError as e:
            raise MachineError(f"cannot start {self.args[0]}: {e}") from None
        for s in (self.qmp_theirs, self.dbg_theirs):
            if s is not None:
                s.close()
        self.ivshmem.after_launch()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True,
                                               name=f"qemu-stderr-{self.name}")
        self._stderr_thread.start()
        self.state = Runstate.RUNNING

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.stderr_lines.append(line)
                log.debug("qemu[%s]: %s", self.name, line)

    def failure(self) -> MachineError:
        """A one-line error for a QEMU that died."""
        rc = self.proc.poll() if self.proc else None
        self._stderr_thread.join(timeout=1) if self.proc else None
        msg = next((l for l in self.stderr_lines if "qemu-system" in l or "error" in l.lower()),
                   self.stderr_lines[0] if self.stderr_lines else "")
        msg = msg.split(": ", 1)[-1] if msg.startswith(self.args[0]) else msg
        return MachineError(f"QEMU exited (status {rc}): {msg or 'no message'}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def connect_qmp(self) -> None:
        self.qmp = QMPClient(self.name)
        await asyncio.wait_for(self.qmp.connect(self.qmp_ours), timeout=30)

    async def command(self, cmd: str, **args):
        if self.qmp is None:
            raise MachineError("QMP is not connected")
        return await self.qmp.execute(cmd, args or None)

    async def pause(self) -> None:
        await self.command("stop")
        self.state = Runstate.STOPPED

    async def resume(self) -> None:
        await self.command("cont")
        self.state = Runstate.RUNNING

    async def quit(self) -> None:
        """Ask QEMU to exit; kill it if it does not."""
        try:
            if self.qmp is not None and self.alive():
                await asyncio.wait_for(self.qmp.execute("quit"), timeout=2)
        except Exception:
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    async def close(self) -> None:
        await self.quit()
        if self.qmp is not None:
            try:
                await asyncio.wait_for(self.qmp.disconnect(), timeout=2)
            except Exception:
                pass
        self.cleanup()

    def cleanup(self) -> None:
        self.kill()
        self.ivshmem.close()
        for s in (self.qmp_ours, self.qmp_theirs, self.dbg_ours, self.dbg_theirs):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    # ---- transport ----
    def doorbell_fd(self, vcpu: int) -> int:
        if self.doorbell == "ivshmem":
            return self.ivshmem.doorbell_fds[vcpu]
        if self.doorbell == "port":
            return self.dbg_ours.fileno()
        return -1

    def kick(self, vcpu: int) -> None:
        self.ivshmem.kick(vcpu)

    def kick_fd(self, vcpu: int) -> int:
        return self.ivshmem.kick_fds[vcpu]
