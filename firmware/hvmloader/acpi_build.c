/*
 * Build the ACPI tables at bi->acpi_base, in the order of the seed's blob
 * (the FACS first, the RSDP right after it, acpi_madt.c relies on that):
 *
 *   FACS  RSDP  RSDT  XSDT  FADT  MADT (room for HVM_MAX_VCPUS)  DSDT
 *
 * The MADT is built as the seed's static table was: the IO-APIC and one
 * enabled local APIC (CPU 0).  acpi_madt_update() then sizes it for the
 * vCPUs the builder asked for.
 */
#include "hvmloader.h"
#include "acpi.h"

uint8_t acpi_sum(const void *p, uint32_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    while (len--)
        sum += *b++;
    return sum;
}

/* seed acpi_madt.c set_checksum(): zero the byte, sum, store -sum */
void set_checksum(void *table, uint32_t checksum_offset, uint32_t length)
{
    uint8_t *p = table;
    p[checksum_offset] = 0;
    p[checksum_offset] = (uint8_t)-acpi_sum(p, length);
}

static void fill_header(struct acpi_header *h, uint32_t sig, uint32_t len, uint8_t rev)
{
    h->signature = sig;
    h->length = len;
    h->revision = rev;
    memcpy(h->oem_id, ACPI_OEM_ID, 6);
    memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
    h->oem_revision = ACPI_OEM_REVISION;
    h->creator_id = ACPI_CREATOR_ID;
    h->creator_revision = ACPI_CREATOR_REVISION;
}

static struct acpi_gas io_gas(uint32_t port, uint8_t bytes)
{
    struct acpi_gas g = { .space_id = 1, .bit_width = (uint8_t)(bytes * 8), .bit_offset = 0,
                          .access_size = 0, .address = port };
    return g;
}

static void build_fadt(struct acpi_fadt *f, uint32_t facs, uint32_t dsdt)
{
    memset(f, 0, sizeof(*f));
    fill_header(&f->header, ACPI_FADT_SIGNATURE, sizeof(*f), 3);
    f->firmware_ctrl = facs;
    f->dsdt = dsdt;
    f->preferred_pm_profile = 0;            /* unspecified            */
    f->sci_int = HVM_SCI_IRQ;
    f->smi_cmd = 0;                         /* always in ACPI mode    */
    f->pm1a_evt_blk = HVM_PM_BASE;
    f->pm1a_cnt_blk = HVM_PM_BASE + 4;
    f->pm_tmr_blk = HVM_PM_BASE + 8;
    f->gpe0_blk = HVM_GPE0_BASE;
    f->pm1_evt_len = 4;
    f->pm1_cnt_len = 2;
    f->pm_tmr_len = 4;
    f->gpe0_blk_len = 4;
    f->p_lvl2_lat = 101;                    /* no C2                  */
    f->p_lvl3_lat = 1001;                   /* no C3                  */
    f->century = 0x32;                      /* RTC CMOS century byte  */
    f->iapc_boot_arch = ACPI_FADT_LEGACY_DEVICES | ACPI_FADT_8042;
    f->flags = ACPI_FADT_WBINVD | ACPI_FADT_PROC_C1 | ACPI_FADT_SLP_BUTTON |
               ACPI_FADT_RESET_REG_SUP;
    f->reset_reg = io_gas(0xcf9, 1);        /* PIIX3 reset control    */
    f->reset_value = 0x06;
    f->x_firmware_ctrl = 0;                 /* FIRMWARE_CTRL is used: below 4G */
    f->x_dsdt = dsdt;
    f->x_pm1a_evt_blk = io_gas(HVM_PM_BASE, 4);
    f->x_pm1a_cnt_blk = io_gas(HVM_PM_BASE + 4, 2);
    f->x_pm_tmr_blk = io_gas(HVM_PM_BASE + 8, 4);
    f->x_gpe0_blk = io_gas(HVM_GPE0_BASE, 4);
    set_checksum(f, 9, sizeof(*f));
}

/* the seed's static MADT: IO-APIC, then CPU 0 alone */
static uint32_t build_madt(struct acpi_madt *m)
{
    static const struct { uint8_t irq, gsi; uint16_t flags; } isos[ACPI_NR_ISOS] = {
        { 0, 2, 0 },                                            /* PIT    */
        { 5, 5, ACPI_ISO_POLARITY_HIGH | ACPI_ISO_TRIGGER_LEVEL },
        { 9, 9, ACPI_ISO_POLARITY_HIGH | ACPI_ISO_TRIGGER_LEVEL },   /* SCI */
        { 10, 10, ACPI_ISO_POLARITY_HIGH | ACPI_ISO_TRIGGER_LEVEL },
        { 11, 11, ACPI_ISO_POLARITY_HIGH | ACPI_ISO_TRIGGER_LEVEL },
    };
    uint32_t len = ACPI_MADT_FIXED_LEN + sizeof(struct acpi_local_apic);

    memset(m, 0, ACPI_MADT_FIXED_LEN + HVM_MAX_VCPUS * sizeof(struct acpi_local_apic));
    fill_header(&m->header.header, ACPI_MADT_SIGNATURE, len, 1);
    m->header.local_apic_address = ACPI_LOCAL_APIC_ADDRESS;
    m->header.flags = ACPI_PCAT_COMPAT;
    m->io_apic[0] = (struct acpi_io_apic){ ACPI_IO_APIC, sizeof(struct acpi_io_apic),
                                           ACPI_IO_APIC_ID, 0, ACPI_IO_APIC_ADDRESS, 0 };
    for (int i = 0; i < ACPI_NR_ISOS; i++)
        m->iso[i] = (struct acpi_iso){ ACPI_INTERRUPT_SOURCE_OVERRIDE, sizeof(struct acpi_iso),
                                       0, isos[i].irq, isos[i].gsi, isos[i].flags };
    m->lapic_nmi[0] = (struct acpi_lapic_nmi){ ACPI_LOCAL_APIC_NMI, sizeof(struct acpi_lapic_nmi),
                                               0xff, 0, 1 };
    m->local_apic[0] = (struct acpi_local_apic){ ACPI_PROCESSOR_LOCAL_APIC,
                                                 sizeof(struct acpi_local_apic), 0, 0, 1 };
    set_checksum(m, 9, len);
    return len;
}

/* Returns the RSDP's address, 0 if the tables do not fit. */
uint32_t acpi_build_tables(struct hvm_boot_info *bi)
{
    uint32_t base = bi->acpi_base, p = base;
    uint32_t dsdt_len = (uint32_t)(dsdt_aml_end - dsdt_aml);
    uint32_t madt_room = ACPI_MADT_FIXED_LEN + HVM_MAX_VCPUS * sizeof(struct acpi_local_apic);
    uint32_t need = 64 + 48 + 48 + 64 + 256 + ALIGN_UP(madt_room, 16) + dsdt_len;

    if (base & 63 || need > bi->acpi_size) {
        printf("hvmloader: ACPI tables need %u bytes at %x, have %u\n", need, base, bi->acpi_size);
        return 0;
    }
    memset((void *)base, 0, need);

    struct acpi_facs *facs = (void *)p;
    p += 64;
    struct acpi_rsdp *rsdp = (void *)p;
    p += 48;
    struct acpi_header *rsdt = (void *)p;
    p += 48;
    struct acpi_header *xsdt = (void *)p;
    p += 64;
    struct acpi_fadt *fadt = (void *)p;
    p += 256;
    struct acpi_madt *madt = (void *)p;
    p += ALIGN_UP(madt_room, 16);
    struct acpi_header *dsdt = (void *)p;

    facs->signature = ACPI_FACS_SIGNATURE;
    facs->length = sizeof(*facs);
    facs->version = 1;

    memcpy(dsdt, dsdt_aml, dsdt_len);
    /* iasl wrote our OEM ids already; the checksum is the compiler's */
    if (dsdt->signature != ACPI_DSDT_SIGNATURE || dsdt->length != dsdt_len ||
        acpi_sum(dsdt, dsdt_len) != 0) {
        printf("hvmloader: the built-in DSDT is corrupt\n");
        return 0;
    }

    build_fadt(fadt, (uint32_t)facs, (uint32_t)dsdt);
    build_madt(madt);

    /* RSDT and XSDT: Entry[0] the FADT, Entry[1] the MADT (as the seed) */
    uint32_t tables[2] = { (uint32_t)fadt, (uint32_t)madt };
    fill_header(rsdt, ACPI_RSDT_SIGNATURE, 36 + 4 * 2, 1);
    fill_header(xsdt, ACPI_XSDT_SIGNATURE, 36 + 8 * 2, 1);
    for (int i = 0; i < 2; i++) {
        ((uint32_t *)(rsdt + 1))[i] = tables[i];
        ((uint64_t *)(xsdt + 1))[i] = tables[i];
    }
    set_checksum(rsdt, 9, rsdt->length);
    set_checksum(xsdt, 9, xsdt->length);

    rsdp->signature = ACPI_RSDP_SIGNATURE;
    memcpy(rsdp->oem_id, ACPI_OEM_ID, 6);
    rsdp->revision = 2;
    rsdp->rsdt_address = (uint32_t)rsdt;
    rsdp->length = sizeof(*rsdp);
    rsdp->xsdt_address = (uint32_t)xsdt;
    set_checksum(rsdp, 8, 20);
    set_checksum(rsdp, 32, sizeof(*rsdp));
    return (uint32_t)rsdp;
}
