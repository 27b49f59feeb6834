/* Start the guest the builder loaded, the way bi->boot_kind says. */
#include "hvmloader.h"

#define BP_ACPI_RSDP_ADDR   0x070       /* struct boot_params, u64       */
#define BP_HDR_VERSION      0x206       /* setup header "version"        */
#define XEN_HVM_START_MAGIC 0x336ec578u
#define SI_RSDP_PADDR       32          /* struct hvm_start_info, u64    */

void boot_guest(struct hvm_boot_info *bi)
{
    uint8_t *data = (uint8_t *)bi->boot_data;

    switch (bi->boot_kind) {
    case HVM_BOOT_LINUX: {
        uint16_t ver = *(uint16_t *)(data + BP_HDR_VERSION);
        if (ver >= 0x020e)
            *(uint64_t *)(data + BP_ACPI_RSDP_ADDR) = bi->rsdp;
        printf("hvmloader: starting Linux (boot protocol %u.%02u) at %x, boot_params at %x\n",
               ver >> 8, ver & 0xff, bi->entry, bi->boot_data);
        bi->status = HVM_STATUS_GUEST;
        enter_linux(bi->entry, bi->boot_data);
    }
    case HVM_BOOT_PVH:
        if (*(uint32_t *)data != XEN_HVM_START_MAGIC)
            fail("hvm_start_info has a bad magic");
        *(uint64_t *)(data + SI_RSDP_PADDR) = bi->rsdp;
        printf("hvmloader: starting the PVH entry at %x, hvm_start_info at %x\n",
               bi->entry, bi->boot_data);
        bi->status = HVM_STATUS_GUEST;
        enter_pvh(bi->entry, bi->boot_data);
    case HVM_BOOT_MULTIBOOT:
        /* Multiboot 1 has no RSDP field: the guest finds the RSDP by the
         * ACPI search (acpi_build_tables puts it 16-byte aligned in
         * 0xE0000-0xFFFFF) */
        printf("hvmloader: starting multiboot kernel at %x, multiboot_info at %x\n",
               bi->entry, bi->boot_data);
        bi->status = HVM_STATUS_GUEST;
        enter_multiboot(bi->entry, bi->boot_data);
    case HVM_BOOT_REALMODE:
        printf("hvmloader: starting real mode at %04x:%04x\n", bi->entry >> 16, bi->entry & 0xffff);
        bi->status = HVM_STATUS_GUEST;
        enter_realmode(bi->entry);
    case HVM_BOOT_NONE:
        puts("hvmloader: no guest kernel to start (disk boot is not supported): powering off\n");
        power_off();
    default:
        fail("unknown boot kind");
    }
}
