/*
 * The doorbell transport.  ivshmem-doorbell (a PCI device whose server is
 * our Python process) carries guest -> Python doorbells through BAR0 and
 * Python -> guest kicks as an MSI-X interrupt.  Python chooses the BAR
 * addresses; nothing else programs PCI on this machine.
 */
#include "shim.h"

#define PCI_VENDOR_REDHAT   0x1af4
#define PCI_DEVICE_IVSHMEM  0x1110
#define IVSHMEM_DOORBELL    12

static uint32_t pci_addr(uint32_t bdf, uint32_t off)
{
    return 0x80000000u | (bdf << 8) | (off & 0xfc);
}
static uint32_t pci_read32(uint32_t bdf, uint32_t off)
{
    outl(0xcf8, pci_addr(bdf, off));
    return inl(0xcfc);
}
static void pci_write32(uint32_t bdf, uint32_t off, uint32_t v)
{
    outl(0xcf8, pci_addr(bdf, off));
    outl(0xcfc, v);
}

static uint32_t find_cap(uint32_t bdf, uint8_t id)
{
    if (!(pci_read32(bdf, 0x04) & (1u << 20)))          /* status: cap list */
        return 0;
    uint32_t p = pci_read32(bdf, 0x34) & 0xfc;
    for (int n = 0; p && n < 48; n++) {
        uint32_t h = pci_read32(bdf, p);
        if ((h & 0xff) == id)
            return p;
        p = (h >> 8) & 0xfc;
    }
    return 0;
}

void ivshmem_init(void)
{
    shim_boot.ivshmem_bdf = 0xffffffffu;
    if (!shim_boot.ivshmem_bar0)
        return;
    uint32_t bdf;
    for (bdf = 0; bdf < 32 * 8; bdf += 8)               /* bus 0, function 0 */
        if (pci_read32(bdf, 0) == ((PCI_DEVICE_IVSHMEM << 16) | PCI_VENDOR_REDHAT))
            break;
    if (bdf >= 32 * 8)
        panic("ivshmem-doorbell device not found", 0, 0);
    shim_boot.ivshmem_bdf = bdf;
    pci_write32(bdf, 0x10, shim_boot.ivshmem_bar0);
    pci_write32(bdf, 0x14, shim_boot.ivshmem_bar1);
    pci_write32(bdf, 0x18, shim_boot.ivshmem_bar2);
    pci_write32(bdf, 0x1c, 0);
    pci_write32(bdf, 0x04, pci_read32(bdf, 0x04) | 0x6); /* memory, bus master */

    uint32_t cap = find_cap(bdf, 0x11);                 /* MSI-X */
    if (!cap)
        panic("ivshmem-doorbell has no MSI-X", bdf, 0);
    uint32_t table = pci_read32(bdf, cap + 4);
    if ((table & 7) != 1)
        panic("ivshmem MSI-X table not in BAR1", table, 0);
    /* vector n kicks vCPU n (APIC id n) */
    for (uint32_t n = 0; n < shim_boot.nr_vcpus; n++) {
        uint32_t entry = shim_boot.ivshmem_bar1 + (table & ~7u) + 16 * n;
        mmio_write32(entry + 0, 0xfee00000u | (n << 12));
        mmio_write32(entry + 4, 0);
        mmio_write32(entry + 8, SHIM_VEC_KICK);
        mmio_write32(entry + 12, 0);                    /* unmasked */
    }
    uint32_t ctl = pci_read32(bdf, cap);
    pci_write32(bdf, cap, (ctl & ~(1u << 30)) | (1u << 31)); /* enable, unmask */
}

void doorbell_ring(struct shim_vcpu *v)
{
    v->stat_doorbells++;
    switch (shim_boot.doorbell) {
    case SHIM_DOORBELL_IVSHMEM:
        if (shim_boot.ivshmem_bdf != 0xffffffffu)
            mmio_write32(SHIM_DOORBELL_VA + IVSHMEM_DOORBELL,
                         (shim_boot.ivshmem_peer << 16) | v->vcpu_id);
        break;
    case SHIM_DOORBELL_PORT:
        outb((uint16_t)shim_boot.doorbell_port, (uint8_t)v->vcpu_id);
        break;
    default:
        break;
    }
}
