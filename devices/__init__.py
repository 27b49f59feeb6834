"""Back ends (importable as ``qemu_xenpv.devices``): the PV console
(console.py), the split-driver mechanism (xenbus.py), blkback (blkback.py,
images via storage.py) and netback.

A back-end module registers the devices a domain's configuration asks for
with ``xenbus.register_backend(kind, factory)`` when it is imported;
:func:`load_backends` imports them all (add a new back end here)."""

_BACKENDS = ("blkback", "netback")


def load_backends() -> None:
    import importlib
    for name in _BACKENDS:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
