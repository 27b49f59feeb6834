"""console_io: the hypervisor console (what `qemu-xenpv dmesg` shows).
A guest's own console is the PV ring (devices/console.py)."""

from .. import abi
from ..abi import EINVAL, ENOSYS, EPERM
from . import hypercall

MAX_WRITE = 1 << 16


@hypercall("console_io", 3, {abi.CONSOLEIO_write: "write", abi.CONSOLEIO_read: "read"},
           note="write goes to the hypervisor log (dmesg); read is for dom0 only")
def console_io(call, cmd, count, buf):
    if cmd == abi.CONSOLEIO_write:
        if count > 0x7FFFFFFF:
            return -EINVAL
        data = call.read(buf, min(count, MAX_WRITE))
        call.dom.guest_console_write(data)
        return 0
    if cmd == abi.CONSOLEIO_read:
        return -EPERM
    return -ENOSYS
