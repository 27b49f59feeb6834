"""qemu-xenpv: Xen guests booted on a stock QEMU, with no Xen installed.

QEMU supplies i686 hardware; this package plays Xen and domain 0.
"""

__version__ = "0.1.0"
