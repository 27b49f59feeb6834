/*
 * The builder <-> hvmloader ABI: guest-physical addresses and the two
 * blocks the Python HVM builder writes before the first instruction runs.
 *
 * qemu_xenpv/hvm/layout.py declares the same numbers; tests/unit/
 * test_hvm_layout.py checks both against this file.
 *
 * Low memory of an HVM domain (the e820 map the builder writes):
 *
 *   0x00000000-0x0009F7FF  RAM      IVT/BDA, loader scratch, boot data
 *       0x00010000-0x0007FFFF  hvmloader, copied there from the ROM;
 *                              its stack ends at 0x80000 (free once the
 *                              guest runs)
 *       0x00090000             boot_params (Linux), hvm_start_info (PVH)
 *                              or multiboot_info (Multiboot)
 *       0x00091000             the guest command line
 *   0x0009F800-0x0009FFFF  RESERVED the vCPU block and the boot info
 *       0x0009F800             vCPU block: u32 magic "vcpu", u32 count
 *                              (seed 002, xc_vmx_build.c set_nr_vcpus)
 *       0x0009F900             struct hvm_boot_info
 *       0x0009FA00             struct hvm_pv_info "XenPVHVM" (PV drivers;
 *                              qemu_xenpv/hvm/layout.py, not the loader's)
 *   0x000A0000-0x000BFFFF  RESERVED legacy VGA hole
 *   0x000E0000-0x000FFFFF  RESERVED BIOS area: the ACPI tables at 0xEA000
 *                              (seed ACPI_PHYSICAL_ADDRESS), made RAM by
 *                              the loader through the i440FX PAM registers;
 *                              0xF0000-0xFFFFF stays the ROM
 *   0x00100000-mem-32K     RAM      the guest kernel, initrd, free memory
 *   mem-32K-mem end        RESERVED the PV area: hypercall stubs, mailboxes,
 *                              shared_info, XenStore and console rings
 *   0xFEC00000-0xFFFFFFFF  RESERVED IO-APIC, HPET, LAPIC, the ROM
 */
#ifndef HVM_INFO_H
#define HVM_INFO_H

#define HVM_LOADER_BASE         0x00010000u     /* link address in RAM       */
#define HVM_LOADER_LIMIT        0x00080000u     /* image + bss + stack below */
#define HVM_BOOT_DATA           0x00090000u     /* boot_params/start_info    */
#define HVM_CMDLINE             0x00091000u
#define HVM_CMDLINE_MAX         0x00001000u

#define HVM_VCPU_BLOCK          0x0009F800u     /* E820-reserved (seed)      */
#define HVM_VCPU_MAGIC          0x76637075u     /* "vcpu"                    */
#define HVM_MAX_VCPUS           128             /* HVM_MAX_VCPUS of Xen      */

#define HVM_BOOT_INFO           0x0009F900u
#define HVM_BOOT_MAGIC          0x48565058u     /* "XPVH"                    */
#define HVM_BOOT_VERSION        1

#define HVM_RESERVED_START      0x0009F800u
#define HVM_RESERVED_END        0x000A0000u

#define HVM_ACPI_BASE           0x000EA000u     /* seed ACPI_PHYSICAL_ADDRESS */
#define HVM_ACPI_LIMIT          0x000F0000u     /* ROMBIOS starts here (seed) */

/* boot kinds: how the loader starts the guest */
#define HVM_BOOT_NONE           0   /* report and power off              */
#define HVM_BOOT_LINUX          1   /* Linux 32-bit boot protocol        */
#define HVM_BOOT_PVH            2   /* XEN_ELFNOTE_PHYS32_ENTRY          */
#define HVM_BOOT_REALMODE       3   /* 16-bit real mode at CS:IP         */
#define HVM_BOOT_MULTIBOOT      4   /* Multiboot 0.6.96: multiboot_info  */

/* flags */
#define HVM_FLAG_QUIET          (1u << 0)   /* fewer loader messages     */

/* loader status (written by the loader) */
#define HVM_STATUS_NONE         0
#define HVM_STATUS_STARTED      1
#define HVM_STATUS_ACPI_DONE    2
#define HVM_STATUS_GUEST        3   /* jumped to the guest               */
#define HVM_STATUS_FAILED       0xdead

/* the ACPI PM block the loader programs into the PIIX4 (and the FADT)   */
#define HVM_PM_BASE             0xb000u
#define HVM_GPE0_BASE           0xafe0u     /* fixed in QEMU's PIIX4 PM   */
#define HVM_SCI_IRQ             9

/* The PV callback device: an ivshmem-doorbell (1af4:1110) whose MSI-X
 * entry i the loader points at vector HVM_CB_VECTOR_BASE + i on APIC 0,
 * so Python can raise any vector a guest picks for HVM_PARAM_CALLBACK_IRQ */
#define HVM_CB_VENDOR           0x1af4u
#define HVM_CB_DEVICE           0x1110u
#define HVM_CB_VECTOR_BASE      0x20
#define HVM_CB_VECTORS          224         /* vectors 0x20-0xff        */

/* offsets in struct hvm_boot_info (for the DSDT and Python)             */
#define HVM_BI_NR_VCPUS_OFF     40

#ifndef __ASSEMBLER__
#include <stdint.h>

/* At HVM_VCPU_BLOCK: exactly what the seed's set_nr_vcpus() wrote. */
struct hvm_vcpu_block {
    uint32_t magic;                 /* HVM_VCPU_MAGIC                    */
    uint32_t nr_vcpus;
};

/* At HVM_BOOT_INFO: written by the builder, completed by the loader. */
struct hvm_boot_info {
    uint32_t magic;                 /*  0 HVM_BOOT_MAGIC                 */
    uint16_t version;               /*  4 HVM_BOOT_VERSION               */
    uint16_t length;                /*  6 sizeof(struct hvm_boot_info)   */
    uint8_t  checksum;              /*  8 bytes [0, 40) sum to 0         */
    uint8_t  _pad[3];
    uint32_t boot_kind;             /* 12 HVM_BOOT_*                     */
    uint32_t entry;                 /* 16 32-bit entry; REALMODE: cs<<16|ip */
    uint32_t boot_data;             /* 20 boot_params / hvm_start_info / multiboot_info */
    uint32_t acpi_base;             /* 24 where the ACPI tables go       */
    uint32_t acpi_size;             /* 28 room there                     */
    uint32_t low_mem_end;           /* 32 end of RAM below 4 GiB         */
    uint32_t flags;                 /* 36 HVM_FLAG_*                     */
    /* ---- written by the loader (not covered by the checksum) ---- */
    uint32_t nr_vcpus;              /* 40 local APICs in the MADT        */
    uint32_t status;                /* 44 HVM_STATUS_*                   */
    uint32_t rsdp;                  /* 48 where the RSDP is              */
    uint32_t cpus_present;          /* 52 fw_cfg's CPU count             */
};
#define HVM_BI_CHECKED_LEN      40  /* the builder's part                */

_Static_assert(sizeof(struct hvm_boot_info) == 56, "hvm_boot_info size");
_Static_assert(__builtin_offsetof(struct hvm_boot_info, nr_vcpus) == HVM_BI_NR_VCPUS_OFF,
               "nr_vcpus offset (the DSDT reads it)");
#endif /* __ASSEMBLER__ */
#endif /* HVM_INFO_H */
