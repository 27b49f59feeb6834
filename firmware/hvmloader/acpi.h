/*
 * ACPI table layouts (ACPI 2.0, the revision the seed's acpi2_0.h
 * declared), packed, with their sizes asserted next to them.
 */
#ifndef ACPI_H
#define ACPI_H

#include <stdint.h>

#define ACPI_SIG(a, b, c, d)    ((uint32_t)(a) | (uint32_t)(b) << 8 | \
                                 (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define ACPI_RSDP_SIGNATURE     0x2052545020445352ull   /* "RSD PTR "     */
#define ACPI_RSDT_SIGNATURE     ACPI_SIG('R', 'S', 'D', 'T')
#define ACPI_XSDT_SIGNATURE     ACPI_SIG('X', 'S', 'D', 'T')
#define ACPI_FADT_SIGNATURE     ACPI_SIG('F', 'A', 'C', 'P')
#define ACPI_FACS_SIGNATURE     ACPI_SIG('F', 'A', 'C', 'S')
#define ACPI_MADT_SIGNATURE     ACPI_SIG('A', 'P', 'I', 'C')
#define ACPI_DSDT_SIGNATURE     ACPI_SIG('D', 'S', 'D', 'T')

#define ACPI_OEM_ID             "XENPV "        /* 6 bytes              */
#define ACPI_OEM_TABLE_ID       "QEMUHVM "      /* 8 bytes              */
#define ACPI_OEM_REVISION       2
#define ACPI_CREATOR_ID         ACPI_SIG('X', 'P', 'V', 'L')
#define ACPI_CREATOR_REVISION   1

#define ACPI_LOCAL_APIC_ADDRESS 0xfee00000u
#define ACPI_IO_APIC_ADDRESS    0xfec00000u
#define ACPI_IO_APIC_ID         0       /* QEMU's IO-APIC ID register at reset */
#define ACPI_PCAT_COMPAT        1u

#pragma pack(push, 1)

struct acpi_header {
    uint32_t signature;
    uint32_t length;
    uint8_t  revision;
    uint8_t  checksum;              /* offset 9                          */
    char     oem_id[6];
    char     oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
};
_Static_assert(sizeof(struct acpi_header) == 36, "ACPI header");

struct acpi_rsdp {
    uint64_t signature;
    uint8_t  checksum;              /* bytes 0..19                       */
    char     oem_id[6];
    uint8_t  revision;              /* 2: ACPI 2.0 with the XSDT         */
    uint32_t rsdt_address;
    uint32_t length;                /* 36                                */
    uint64_t xsdt_address;
    uint8_t  extended_checksum;     /* all 36 bytes                      */
    uint8_t  reserved[3];
};
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP");

struct acpi_gas {                   /* Generic Address Structure         */
    uint8_t  space_id;              /* 0 memory, 1 system I/O            */
    uint8_t  bit_width;
    uint8_t  bit_offset;
    uint8_t  access_size;
    uint64_t address;
};
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS");

struct acpi_facs {
    uint32_t signature;
    uint32_t length;                /* 64                                */
    uint32_t hardware_signature;
    uint32_t firmware_waking_vector;
    uint32_t global_lock;
    uint32_t flags;
    uint64_t x_firmware_waking_vector;
    uint8_t  version;               /* 1 (ACPI 2.0)                      */
    uint8_t  reserved[31];
};
_Static_assert(sizeof(struct acpi_facs) == 64, "FACS");

struct acpi_fadt {                  /* ACPI 2.0, revision 3              */
    struct acpi_header header;
    uint32_t firmware_ctrl;
    uint32_t dsdt;
    uint8_t  reserved0;             /* INT_MODEL in 1.0                  */
    uint8_t  preferred_pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t  acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
    uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
    uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
    uint8_t  pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
    uint8_t  gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
    uint16_t p_lvl2_lat, p_lvl3_lat;
    uint16_t flush_size, flush_stride;
    uint8_t  duty_offset, duty_width, day_alrm, mon_alrm, century;
    uint16_t iapc_boot_arch;
    uint8_t  reserved1;
    uint32_t flags;
    struct acpi_gas reset_reg;
    uint8_t  reset_value;
    uint8_t  reserved2[3];
    uint64_t x_firmware_ctrl;
    uint64_t x_dsdt;
    struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
    struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
};
_Static_assert(sizeof(struct acpi_fadt) == 244, "FADT");

#define ACPI_FADT_WBINVD            (1u << 0)
#define ACPI_FADT_PROC_C1           (1u << 2)
#define ACPI_FADT_SLP_BUTTON        (1u << 5)
#define ACPI_FADT_RESET_REG_SUP     (1u << 10)
#define ACPI_FADT_LEGACY_DEVICES    (1u << 0)   /* iapc_boot_arch        */
#define ACPI_FADT_8042              (1u << 1)

/* MADT and its entries */
#define ACPI_PROCESSOR_LOCAL_APIC       0
#define ACPI_IO_APIC                    1
#define ACPI_INTERRUPT_SOURCE_OVERRIDE  2
#define ACPI_LOCAL_APIC_NMI             4

struct acpi_madt_header {
    struct acpi_header header;
    uint32_t local_apic_address;
    uint32_t flags;
};
_Static_assert(sizeof(struct acpi_madt_header) == 44, "MADT header");

struct acpi_io_apic {
    uint8_t  type, length;
    uint8_t  io_apic_id;
    uint8_t  reserved;
    uint32_t io_apic_address;
    uint32_t gsi_base;
};
_Static_assert(sizeof(struct acpi_io_apic) == 12, "IO-APIC entry");

struct acpi_iso {
    uint8_t  type, length;
    uint8_t  bus;                   /* 0: ISA                            */
    uint8_t  source;                /* ISA IRQ                           */
    uint32_t gsi;
    uint16_t flags;                 /* polarity bits 0-1, trigger 2-3    */
};
_Static_assert(sizeof(struct acpi_iso) == 10, "interrupt source override");

struct acpi_lapic_nmi {
    uint8_t  type, length;
    uint8_t  processor_id;          /* 0xff: all                         */
    uint16_t flags;
    uint8_t  lint;
};
_Static_assert(sizeof(struct acpi_lapic_nmi) == 6, "local APIC NMI");

struct acpi_local_apic {
    uint8_t  type, length;
    uint8_t  acpi_processor_id;
    uint8_t  apic_id;
    uint32_t flags;                 /* bit 0: enabled                    */
};
_Static_assert(sizeof(struct acpi_local_apic) == 8, "local APIC entry");

#define ACPI_ISO_POLARITY_HIGH  0x1
#define ACPI_ISO_TRIGGER_LEVEL  0xc
#define ACPI_NR_ISOS            5   /* IRQ0->GSI2; SCI 9, PCI 5/10/11 level */

/* The seed's acpi_madt.h (changeset 6979) put the IO-APIC first so the
 * table can be truncated after the last used local APIC; we add the
 * interrupt source overrides and the LINT1 NMI between them.          */
struct acpi_madt {
    struct acpi_madt_header header;
    struct acpi_io_apic     io_apic[1];
    struct acpi_iso         iso[ACPI_NR_ISOS];
    struct acpi_lapic_nmi   lapic_nmi[1];
    struct acpi_local_apic  local_apic[];    /* up to HVM_MAX_VCPUS  */
};
#define ACPI_MADT_FIXED_LEN     (sizeof(struct acpi_madt))
_Static_assert(sizeof(struct acpi_madt) == 44 + 12 + 50 + 6, "MADT fixed part");

#pragma pack(pop)

/* acpi_build.c */
struct hvm_boot_info;
uint32_t acpi_build_tables(struct hvm_boot_info *bi);

/* acpi_madt.c: the seed's MADT update, applied to the tables just built */
int acpi_madt_update(uint32_t rsdp, uint32_t max_vcpus, uint32_t *nr_out);
void set_checksum(void *table, uint32_t checksum_offset, uint32_t length);
uint8_t acpi_sum(const void *p, uint32_t len);

#endif /* ACPI_H */
