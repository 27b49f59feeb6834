"""The QEMU process of an HVM domain: QEMU's `pc` machine as it is (PIC,
IO-APIC, LAPICs, PIT, RTC, PIIX3/PIIX4, 16550 COM1), our RAM file, our
hvmloader as the firmware, COM1 and QMP on socketpairs.

QEMU never exits on its own when the guest stops: a guest power-off,
reset or panic pauses the VM and sends a QMP event (`-action
reboot=shutdown,shutdown=pause,panic=pause`); the domain decides what
happens next (destroy, restart, preserve), as Xen's toolstack does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import threading
from typing import List, Optional

from qemu.qmp import QMPClient

from qemu_xenpv.errors import MachineError
from .qemu import Runstate, qemu_binary
from .ram import GuestRAM

log = logging.getLogger("qemu_xenpv.machine.hvm")


class HVMMachine:
    def __init__(self, ram: GuestRAM, firmware: str, name: str, vcpus: int = 1,
                 accel: str = "tcg", gdb_port: Optional[int] = None, gdb_wait: bool = False,
                 extra_args: Optional[List[str]] = None, extra_fds: Optional[List[int]] = None):
        self.ram = ram
        self.firmware = firmware
        self.name = name
        self.vcpus = vcpus
        self.accel = accel
        self.gdb_port = gdb_port
        self.gdb_wait = gdb_wait
        self.extra_args = extra_args or []
        self.extra_fds = extra_fds or []
        self.qmp_ours, self.qmp_theirs = socket.socketpair()
        self.com1_ours, self.com1_theirs = socket.socketpair()
        self.com1_ours.setblocking(False)
        self.proc: Optional[subprocess.Popen] = None
        self.qmp: Optional[QMPClient] = None
        self.state = Runstate.NEW
        self.stderr_lines: List[str] = []
        self.args: List[str] = []
        self._stderr_thread: Optional[threading.Thread] = None

    def command_line(self) -> List[str]:
        mb = self.ram.size >> 20
        n = self.vcpus
        # Many vCPUs on few host cores: one TCG thread round-robins them far
        # better than 100 threads fighting for 2 cores.
        accel = self.accel
        if accel == "tcg" and n > 8:
            accel = "tcg,thread=single"
        args = [qemu_binary(), "-name", f"{self.name},debug-threads=on",
                "-nodefaults", "-nographic", "-no-user-config",
                "-action", "reboot=shutdown,shutdown=pause,panic=pause",
                "-accel", accel,
                "-cpu", "qemu32" if self.accel == "tcg" else "qemu32,pni=off",
                "-smp", f"{n},sockets={n},cores=1,threads=1",
                "-m", f"{mb}M",
                "-object", f"memory-backend-file,id=ram,size={mb}M,"
                           f"mem-path=/proc/self/fd/{self.ram.fd},share=on",
                "-machine", "pc,memory-backend=ram",
                "-bios", self.firmware,
                "-rtc", "base=utc",
                "-chardev", f"socket,id=com1,fd={self.com1_theirs.fileno()}",
                "-serial", "chardev:com1",
                "-device", "pvpanic",
                "-chardev", f"socket,id=qmp,fd={self.qmp_theirs.fileno()}",
                "-mon", "chardev=qmp,mode=control"]
        if self.gdb_port is not None:
            args += ["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"]
        # Always start stopped: the domain registers for QMP events, then
        # continues (or leaves that to gdb), so no guest power-off or reset
        # can happen before anyone listens for it.
        args += ["-S"]
        return args + self.extra_args

    def launch(self) -> None:
        self.args = self.command_line()
        log.debug("launch: %s", " ".join(self.args))
        fds = [self.ram.fd, self.com1_theirs.fileno(), self.qmp_theirs.fileno()] + self.extra_fds
        try:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         pass_fds=fds, start_new_session=True)
        except OSError as e:
            raise MachineError(f"cannot start {self.args[0]}: {e}") from None
        for s in (self.qmp_theirs, self.com1_theirs):
            s.close()
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
        rc = self.proc.poll() if self.proc else None
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=1)
        msg = next((l for l in self.stderr_lines if "qemu-system" in l or "error" in l.lower()),
                   self.stderr_lines[0] if self.stderr_lines else "")
        if self.args and msg.startswith(self.args[0]):
            msg = msg.split(": ", 1)[-1]
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
        for s in (self.qmp_ours, self.qmp_theirs, self.com1_ours, self.com1_theirs):
            try:
                s.close()
            except OSError:
                pass
