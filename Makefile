# qemu-xenpv: Xen guests on a stock QEMU.
#   make setup   install what is missing (Debian packages, .venv)
#   make         build the shim, the reset ROM, the native helper, the test guests
#   make demo    setup + build + boot the demo guest on your terminal
#   make test    setup + build + the whole test suite
#   make bench   setup + build + the benchmarks (a table of figures)
#   make docs    regenerate the generated reference pages in docs/
VENV    := .venv
PY      := $(VENV)/bin/python
XENPV   := $(VENV)/bin/qemu-xenpv
PYTEST_ARGS ?= -n 2

all: firmware native guests

firmware:
	@$(MAKE) -s -C firmware
native:
	@$(MAKE) -s -C machine/native
guests:
	@$(MAKE) -s -C guest-images

setup:
	@scripts/setup.sh

demo: setup all
	$(XENPV) create -c guest-images/demo.cfg

test: setup all
	$(PY) -m pytest $(PYTEST_ARGS) tests examples

bench: setup all
	$(PY) -m qemu_xenpv.bench
	$(PY) -m qemu_xenpv.hvm.bench

# regenerate the references made from the code (docs/abi-matrix.md,
# docs/configuration.md, docs/cli.md); a unit test checks the ABI matrix
docs: setup
	$(PY) -m qemu_xenpv.docgen --write

clean:
	@$(MAKE) -s -C firmware clean
	@$(MAKE) -s -C machine/native clean
	@$(MAKE) -s -C guest-images clean

.PHONY: all firmware native guests setup demo test bench docs clean
