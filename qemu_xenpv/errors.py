"""Errors a user sees: one line that says what is wrong and how to fix it."""


class XenPVError(Exception):
    """A user-facing failure; ``str()`` is the one-line message."""

    exit_code = 1


class ConfigError(XenPVError):
    """A domain configuration (file or variables) is wrong."""


class ImageError(XenPVError):
    """A kernel or ramdisk image cannot be used."""


class MachineError(XenPVError):
    """QEMU could not be started or died unexpectedly."""
