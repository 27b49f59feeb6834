/*
 * hvmloader main: what vmxloader's main() did in seed 002, for QEMU's
 * `pc` machine: check the builder's boot info, set up the chipset, build
 * the ACPI tables, apply the MADT update from the vCPU block, start the
 * guest.
 */
#include "hvmloader.h"
#include "acpi.h"

static int boot_info_ok(const struct hvm_boot_info *bi)
{
    return bi->magic == HVM_BOOT_MAGIC && bi->version == HVM_BOOT_VERSION &&
           bi->length == sizeof(*bi) && acpi_sum(bi, HVM_BI_CHECKED_LEN) == 0;
}

void main(void)
{
    struct hvm_boot_info *bi = (void *)HVM_BOOT_INFO;
    uint32_t rsdp, nr = 0;
    int cpus;

    uart_init();
    puts("HVM Loader (qemu-xenpv)\n");
    if (!boot_info_ok(bi))
        fail("no valid boot info at 0x9F900 (was this domain built by qemu-xenpv?)");
    bi->status = HVM_STATUS_STARTED;
    cpus = fw_cfg_nb_cpus();
    bi->cpus_present = cpus > 0 ? (uint32_t)cpus : 0;

    pci_setup(bi->low_mem_end);

    puts("Loading ACPI ...\n");
    bios_area_writable(1);
    rsdp = acpi_build_tables(bi);
    if (!rsdp)
        fail("cannot build the ACPI tables");
    acpi_madt_update(rsdp, HVM_MAX_VCPUS, &nr);     /* its result is the MADT */
    bios_area_writable(0);
    bi->rsdp = rsdp;
    bi->nr_vcpus = nr;
    bi->status = HVM_STATUS_ACPI_DONE;
    if (!(bi->flags & HVM_FLAG_QUIET))
        printf("hvmloader: ACPI tables at %x, RSDP at %x, MADT: %u local APIC(s), %u CPU(s) present\n",
               bi->acpi_base, rsdp, nr, bi->cpus_present);

    boot_guest(bi);
}
