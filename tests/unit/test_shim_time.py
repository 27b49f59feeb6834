"""The shim's system-time arithmetic (firmware/shim/timemath.h), compiled
for i686 on the host and checked against exact integer arithmetic.

Xen's system time advances at the real rate for the life of a domain.  The
shim refines the TSC rate over its whole uptime; ticks * 1e9 overflowed 64
bits after 9.2 s of a 2 GHz TSC, the rate came out 6-13x too low and the
guest's clock ran that much too fast (Mini-OS's once-a-second test thread
printed 5-17 lines a second, the demo's `uptime` gained 70 s every 10 s)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

HARNESS = r"""
#include <stdio.h>
#include <inttypes.h>
#include "timemath.h"
int main(void)
{
    unsigned long long ticks, ns;
    while (scanf("%llu %llu", &ticks, &ns) == 2) {
        uint32_t mul = 0; int32_t shift = 0;
        uint64_t rate = tsc_rate(ticks, ns);
        if (rate)                       /* as time_refresh(): no rate, no new scale */
            time_scale(rate, &mul, &shift);
        printf("%" PRIu64 " %" PRIu32 " %" PRId32 " %" PRIu64 "\n",
               rate, mul, shift, scale_delta(ticks, mul, shift));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def timemath(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("timemath")
    (d / "h.c").write_text(HARNESS)
    exe = d / "h"
    # i686, as the shim is built: 64-bit products and divisions go through libgcc
    subprocess.run(["gcc", "-m32", "-O2", "-Wall", "-Werror", "-I", str(ROOT / "firmware/shim"),
                    str(d / "h.c"), "-o", str(exe)], check=True, capture_output=True)

    def run(pairs):
        out = subprocess.run([str(exe)], input="".join(f"{t} {n}\n" for t, n in pairs),
                             capture_output=True, text=True, check=True).stdout
        return [tuple(int(x) for x in line.split()) for line in out.splitlines()]
    return run


UPTIMES_S = [0.002, 1, 9, 9.3, 10, 11, 60, 3600, 86400, 30 * 86400]


@pytest.mark.parametrize("hz", [1_000_000_000, 2_000_000_000, 3_600_000_000])
def test_rate_is_exact_over_any_uptime(timemath, hz):
    pairs = [(int(hz * t), int(t * 1e9)) for t in UPTIMES_S]
    for (ticks, ns), (rate, mul, shift, scaled) in zip(pairs, timemath(pairs)):
        exact = ticks * 10**9 // ns
        assert abs(rate - exact) <= exact * 1e-9 + 1, (ticks, ns, rate)
        # and the scale made from it turns the same ticks back into ~ns
        assert abs(scaled - ns) <= ns * 1e-6 + 1, (ticks, ns, scaled)


def test_the_old_overflow_is_gone(timemath):
    """10 s of a 2 GHz TSC: ticks * 1e9 mod 2^64 / ns was 155325592 Hz."""
    ticks, ns = 20_000_000_000, 10_000_000_000
    assert (ticks * 10**9 % 2**64) // ns == 155_325_592          # what the shim computed
    (rate, mul, shift, scaled), = timemath([(ticks, ns)])
    assert rate == 2_000_000_000
    assert (mul, shift) == (0x80000000, 0)                        # Xen's scale for 2 GHz
    assert scaled == ns


def test_no_time_is_no_rate(timemath):
    (rate, _mul, _shift, _scaled), = timemath([(12345, 0)])
    assert rate == 0                    # the caller keeps the previous scale
