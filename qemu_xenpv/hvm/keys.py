"""The config variables of HVM domains (no imports: qemu_xenpv.config
merges them into the variables it accepts)."""

# the variables the HVM builder implements; acpi, apic and pae stay xl's
# (config.KNOWN_UNIMPLEMENTED) and are checked by hvm.config for HVM domains
HVM_KEYS = {
    "firmware": "HVM firmware: 'hvmloader' (ours) or the path of a -bios image",
    "firmware_override": "as firmware (xl's older name)",
    "realmode_entry": "HVM: start a raw image in real mode at \"CS:IP\"",
    "device_model": "xm HVM: ignored (QEMU is the device model)",
    "hvm_vcpu_magic": "HVM fault injection: magic written at 0x9F800",
    "hvm_vcpu_count": "HVM fault injection: count written at 0x9F804",
}
