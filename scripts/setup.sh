#!/bin/sh
# Install what qemu-xenpv needs, quietly when everything is already there.
#   Debian packages: qemu-system-x86, qemu-utils (qemu-img: qcow2 disks), gcc-multilib, gdb,
#   acpica-tools (iasl: the HVM DSDT), python3-venv
#   Python: a virtual environment in .venv with this tree installed (-e .[test])
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=""
for pkg in qemu-system-x86 qemu-utils gcc-multilib gdb acpica-tools; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $pkg"
done
if ! $PYTHON -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing="$missing python3-venv"
fi
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    $PYTHON -m venv .venv
fi
# Reinstall when a dependency (runtime or test, as pyproject.toml lists them)
# cannot be imported, when .venv holds another tree, or when pyproject.toml
# changed since the last install (new dependencies, entry points such as the
# pytest plugin): the stamp records the install.
STAMP=.venv/.qemu-xenpv-installed
if ! .venv/bin/python -c 'import qemu_xenpv, qemu_xenpv.pytest_plugin, pytest, xdist, hypothesis, pexpect, qemu.qmp, elftools, construct' \
        >/dev/null 2>&1 ||
   [ "$(.venv/bin/python -c 'import qemu_xenpv, os; print(os.path.dirname(os.path.dirname(qemu_xenpv.__file__)))')" != "$(pwd)" ] ||
   [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "setup: installing qemu-xenpv into .venv"
    .venv/bin/python -m pip install -q -e '.[test]' >.venv/pip.log 2>&1 ||
        { cat .venv/pip.log; echo "setup: pip install failed"; exit 1; }
    touch "$STAMP"
fi
