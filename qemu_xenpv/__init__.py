"""qemu-xenpv: Xen guests booted on a stock QEMU, with no Xen installed.

QEMU supplies i686 hardware; this package plays Xen and domain 0.

    import qemu_xenpv
    with qemu_xenpv.boot("guest.cfg", memory=64) as dom:
        dom.console.expect("login:")

The Python API lives in :mod:`qemu_xenpv.api` (``boot``, ``Host``,
``Domain``, ``Console``, ``Ending``, ...), re-exported here.
"""

__version__ = "0.1.0"

_API = ("boot", "Host", "Domain", "Console", "Ending", "XenStore", "Watch", "load_config",
        "free_port", "ConfigWarning", "DomainGone", "EXIT_CODES")
__all__ = list(_API) + ["XenPVError"]


def __getattr__(name):
    # lazily, so the daemon and the CLI's fast paths do not import the API's
    # dependencies (pexpect) before they need them
    if name in _API:
        from . import api
        return getattr(api, name)
    if name == "XenPVError":
        from .errors import XenPVError
        return XenPVError
    raise AttributeError(f"module 'qemu_xenpv' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
