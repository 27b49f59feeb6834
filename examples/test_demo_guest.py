"""Boot the demo guest with the qemu-xenpv pytest plugin and check an answer."""
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "guest-images" / "demo.cfg"

def test_demo_guest_echoes(xen_guest):          # xen_guest comes from the plugin
    dom = xen_guest(DEMO, memory=32)            # booted; destroyed after the test
    dom.console.expect_exact("demo> ")
    dom.console.sendline("echo hello from pytest")
    dom.console.expect("hello from pytest\r\n")
