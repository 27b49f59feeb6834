/*
 * The MADT update of seed 002 (changeset 6979, tools/firmware/vmxassist/
 * acpi_madt.c): read the vCPU block the builder left at 0x9F800, find
 * RSDP -> RSDT -> MADT, write one enabled local APIC per vCPU after the
 * fixed entries, truncate the table's Length and recompute its checksum.
 *
 * Where the seed passed a bad block through (a count of 0 gave a MADT
 * without processors; a count above the maximum left the table as it
 * was, silently), we refuse it the way it refused a bad magic: fall back
 * to one vCPU and say so.  A count larger than the CPUs QEMU really has
 * would announce processors that never answer a SIPI: refused as well.
 */
#include "hvmloader.h"
#include "acpi.h"

static uint32_t get_vcpus(uint32_t max_vcpus, uint32_t cpus_present)
{
    const volatile struct hvm_vcpu_block *vcpus = (void *)HVM_VCPU_BLOCK;
    uint32_t magic = vcpus->magic, n = vcpus->nr_vcpus;

    if (magic != HVM_VCPU_MAGIC) {
        puts("hvmloader: Bad vcpus magic, set vcpu number=1\n");
        return 1;
    }
    if (n == 0) {
        puts("hvmloader: Bad vcpus number 0, set vcpu number=1\n");
        return 1;
    }
    if (n > max_vcpus) {
        printf("hvmloader: Bad vcpus number %u (maximum %u), set vcpu number=1\n", n, max_vcpus);
        return 1;
    }
    if (cpus_present && n > cpus_present) {
        printf("hvmloader: Bad vcpus number %u (the machine has %u CPUs), set vcpu number=1\n",
               n, cpus_present);
        return 1;
    }
    return n;
}

/* seed acpi_madt_get_madt(): RSDP -> RSDT -> MADT, each signature checked */
static struct acpi_madt *acpi_madt_get_madt(uint32_t rsdp_addr)
{
    struct acpi_rsdp *rsdp = (void *)rsdp_addr;
    if (rsdp->signature != ACPI_RSDP_SIGNATURE) {
        puts("hvmloader: Bad RSDP signature\n");
        return NULL;
    }
    struct acpi_header *rsdt = (void *)rsdp->rsdt_address;
    if (rsdt->signature != ACPI_RSDT_SIGNATURE) {
        puts("hvmloader: Bad RSDT signature\n");
        return NULL;
    }
    /* the seed took Entry[1]; we look at each entry's signature */
    uint32_t n = (rsdt->length - sizeof(*rsdt)) / 4;
    for (uint32_t i = 0; i < n; i++) {
        struct acpi_madt *madt = (void *)((uint32_t *)(rsdt + 1))[i];
        if (madt->header.header.signature == ACPI_MADT_SIGNATURE)
            return madt;
    }
    puts("hvmloader: Bad MADT signature\n");
    return NULL;
}

/* seed acpi_madt_set_local_apics(): one enabled entry per vCPU, then
 * truncate the table after the last one */
static int acpi_madt_set_local_apics(uint32_t nr_vcpu, uint32_t max_vcpus, struct acpi_madt *madt)
{
    if (nr_vcpu > max_vcpus || nr_vcpu == 0 || !madt)
        return -1;
    for (uint32_t i = 0; i < nr_vcpu; i++) {
        madt->local_apic[i].type = ACPI_PROCESSOR_LOCAL_APIC;
        madt->local_apic[i].length = sizeof(struct acpi_local_apic);
        madt->local_apic[i].acpi_processor_id = (uint8_t)i;
        madt->local_apic[i].apic_id = (uint8_t)i;
        madt->local_apic[i].flags = 1;
    }
    memset(&madt->local_apic[nr_vcpu], 0, (max_vcpus - nr_vcpu) * sizeof(struct acpi_local_apic));
    madt->header.header.length = ACPI_MADT_FIXED_LEN + nr_vcpu * sizeof(struct acpi_local_apic);
    return 0;
}

/* Returns 0 or -1; *nr_out is the number of local APICs the MADT lists. */
int acpi_madt_update(uint32_t rsdp, uint32_t max_vcpus, uint32_t *nr_out)
{
    struct hvm_boot_info *bi = (void *)HVM_BOOT_INFO;
    uint32_t nr_vcpu = get_vcpus(max_vcpus, bi->cpus_present);
    struct acpi_madt *madt = acpi_madt_get_madt(rsdp);
    int rc = acpi_madt_set_local_apics(nr_vcpu, max_vcpus, madt);

    if (rc == 0)
        set_checksum(madt, 9, madt->header.header.length);
    *nr_out = madt ? (madt->header.header.length - ACPI_MADT_FIXED_LEN) /
                     sizeof(struct acpi_local_apic) : 0;
    return rc;
}
