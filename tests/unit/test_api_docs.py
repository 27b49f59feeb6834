"""Generated documentation is current: the ABI matrix exactly (it is
generated from the dispatch tables), and the configuration and command-line
references mention every variable and every command."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from qemu_xenpv import abi, abimatrix, docgen

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_abi_matrix_matches_the_dispatch_tables():
    want = abimatrix.generate()
    have = abimatrix.DOC.read_text() if abimatrix.DOC.exists() else ""
    diff = "\n".join(difflib.unified_diff(have.splitlines(), want.splitlines(),
                                          "docs/abi-matrix.md", "generated", lineterm="", n=1))
    assert have == want, ("docs/abi-matrix.md is stale: run "
                          "'python -m qemu_xenpv.abimatrix --write' (or make docs)\n" + diff)


def test_abi_matrix_lists_every_hypercall_and_sub_op():
    from qemu_xenpv import hypercall
    text = abimatrix.generate()
    for nr, name in abi.HYPERCALLS.items():
        assert f"| {nr} | `{name}` |" in text
    for fam in hypercall.TABLE.values():
        for sub, sname in fam.subops.items():
            assert f"| {sub} | `{sname}` |" in text


def test_probe_classifies_handlers():
    from qemu_xenpv.hypercall import GuestFault

    def nosys(call, cmd, arg):
        return -abi.ENOSYS

    def reads(call, cmd, arg):
        return call.read_u32(arg)

    def eperm(call, cmd, arg):
        return -abi.EPERM

    def acts(call, cmd, arg):
        call.dom.something_real(1) + 1            # MagicMock + int: TypeError
        return 0

    assert abimatrix.probe(nosys, (0, 0)) == (abimatrix.MISSING, "-ENOSYS")
    assert abimatrix.probe(reads, (0, abimatrix.PTR))[0] == abimatrix.IMPLEMENTED
    assert abimatrix.probe(eperm, (0, 0)) == (abimatrix.REFUSED, "-EPERM")
    assert abimatrix.probe(acts, (0, 0))[0] == abimatrix.IMPLEMENTED
    assert GuestFault                              # the stub faults on guest memory


def test_configuration_reference_names_every_variable():
    from qemu_xenpv import config
    text = (DOCS / "configuration.md").read_text()
    missing = [k for k in list(config.IMPLEMENTED) + sorted(config.KNOWN_UNIMPLEMENTED)
               if f"`{k}`" not in text]
    assert not missing, (f"docs/configuration.md does not mention {missing}: run "
                         "'python -m qemu_xenpv.docgen --write' (make docs)")


def test_cli_reference_names_every_command():
    from qemu_xenpv.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = (DOCS / "cli.md").read_text()
    missing = [ca.dest for ca in sub._choices_actions
               if ca.help != argparse.SUPPRESS and f"### {ca.dest}\n" not in text]
    assert not missing, (f"docs/cli.md does not describe {missing}: run "
                         "'python -m qemu_xenpv.docgen --write' (make docs)")


def test_docs_are_linked_from_the_readme():
    readme = (DOCS.parent / "README.md").read_text()
    for page in ("getting-started.md", "configuration.md", "cli.md", "api.md", "testing.md",
                 "abi-matrix.md", "debugging.md", "performance.md", "limitations.md"):
        assert (DOCS / page).exists(), page
        assert f"docs/{page}" in readme, f"README.md does not link docs/{page}"
