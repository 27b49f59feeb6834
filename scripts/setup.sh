#!/bin/sh
# Install what qemu-xenpv needs, quietly when everything is already there.
#   Debian packages: qemu-system-x86, gcc-multilib, gdb, acpica-tools (iasl: the HVM DSDT), python3-venv
#   Python: a virtual environment in .venv with this tree installed (-e .[test])
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=""
for pkg in qemu-system-x86 gcc-multilib gdb acpica-tools; do
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
if ! .venv/bin/python -c 'import qemu_xenpv, pytest, xdist, pexpect, qemu.qmp, elftools, construct' \
        >/dev/null 2>&1 ||
   [ "$(.venv/bin/python -c 'import qemu_xenpv, os; print(os.path.dirname(os.path.dirname(qemu_xenpv.__file__)))')" != "$(pwd)" ]; then
    echo "setup: installing qemu-xenpv into .venv"
    .venv/bin/python -m pip install -q -e '.[test]' >.venv/pip.log 2>&1 ||
        { cat .venv/pip.log; echo "setup: pip install failed"; exit 1; }
fi
