"""vcpus = N gives N QEMU CPUs: secondary vCPUs come up with
VCPUOP_initialise/up, answer event-channel IPIs, go down and up again."""

import pexpect
import pytest

from conftest import guest


@pytest.mark.parametrize("vcpus", [2, 32])
def test_secondary_vcpus(xenpv, vcpus):
    c = xenpv.spawn("create", "-c", guest("smp"), f"vcpus={vcpus}",
                    f"name={xenpv.name(f'smp{vcpus}')}", timeout=120)
    c.expect(r"smp: (\d+) vCPUs")
    assert int(c.match.group(1)) == vcpus
    c.expect("Test result: (SUCCESS|FAILURE)")
    out = c.before.decode(errors="replace")
    assert c.match.group(1) == b"SUCCESS", out
    assert out.count("check secondary-runs: ok") == vcpus - 1
    assert out.count("check ipi-answered: ok") == vcpus - 1
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
