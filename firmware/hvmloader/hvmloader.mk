# hvmloader: the HVM firmware (a 128 KiB -bios image), included by
# firmware/Makefile.  Needs iasl (Debian acpica-tools) for the DSDT.
HVM_B      := $(B)/hvmloader
HVM_OBJS   := $(addprefix $(HVM_B)/,head.o main.o lib.o pci.o fw_cfg.o acpi_build.o acpi_madt.o boot.o)
HVM_CFLAGS := $(CFLAGS) -Ihvmloader -Wno-main
HVM_MAX_VCPUS := $(shell sed -n 's/^\#define HVM_MAX_VCPUS *\([0-9]*\).*/\1/p' hvmloader/hvm_info.h)
IASL       ?= iasl

$(B)/hvmloader.bin: $(B)/hvmloader.elf
	objcopy -O binary $< $@
	@test $$(stat -c %s $@) -eq 131072 || { echo "hvmloader.bin must be 128 KiB"; rm -f $@; false; }

$(B)/hvmloader.elf: $(HVM_OBJS) hvmloader/hvmloader.ld
	$(CC) $(LDFLAGS) -T hvmloader/hvmloader.ld $(HVM_OBJS) -lgcc -o $@

$(HVM_B)/%.o: hvmloader/%.c
	@mkdir -p $(@D)
	$(CC) $(HVM_CFLAGS) -c $< -o $@

$(HVM_B)/head.o: hvmloader/head.S $(HVM_B)/dsdt.aml
	@mkdir -p $(@D)
	$(CC) $(ASFLAGS) -Ihvmloader -DDSDT_AML='"$(HVM_B)/dsdt.aml"' -c $< -o $@

$(HVM_B)/dsdt.aml: hvmloader/dsdt.asl hvmloader/mk_dsdt_parts.sh hvmloader/hvm_info.h
	@mkdir -p $(@D)
	@command -v $(IASL) >/dev/null || { echo "iasl not found: install Debian's acpica-tools (make setup)"; false; }
	sh hvmloader/mk_dsdt_parts.sh $(HVM_B) $(HVM_MAX_VCPUS)
	cp hvmloader/dsdt.asl $(HVM_B)/dsdt.asl
	cd $(HVM_B) && $(IASL) -vw 3168 -p dsdt dsdt.asl >iasl.log 2>&1 || { cat iasl.log; false; }

-include $(HVM_OBJS:.o=.d)

# the hypercall area Python writes into HVM domains (qemu_xenpv/hvm/pv.py)
$(B)/hvm-hypercall.bin: hvmloader/hypercall_page.S
	@mkdir -p $(HVM_B)
	$(CC) -m32 -c $< -o $(HVM_B)/hypercall_page.o
	ld -m elf_i386 -Ttext 0 -e 0 --oformat binary $(HVM_B)/hypercall_page.o -o $@
	@test $$(stat -c %s $@) -eq 8192 || { echo "hvm-hypercall.bin must be 8 KiB"; rm -f $@; false; }
