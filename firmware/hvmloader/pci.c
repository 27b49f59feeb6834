/*
 * The PCI and chipset set-up a BIOS would do, for QEMU's i440FX/PIIX3/
 * PIIX4 `pc` machine: PCI interrupt routing (PIIX3 PIRQ A-D to ISA IRQs
 * 10, 10, 11, 11, level-triggered in the ELCR), the PIIX4 ACPI PM block
 * at HVM_PM_BASE with SCI_EN set (the FADT has no SMI command port),
 * BARs of every device on bus 0, and the PAM registers that turn the BIOS
 * area at 0xE0000 into RAM for the ACPI tables.
 */
#include "hvmloader.h"

#define PCI_ADDR(b, d, f, r) (0x80000000u | (b) << 16 | (d) << 11 | (f) << 8 | ((r) & 0xfc))

uint32_t pci_read32(int b, int d, int f, int r) { outl(0xcf8, PCI_ADDR(b, d, f, r)); return inl(0xcfc); }
uint16_t pci_read16(int b, int d, int f, int r) { outl(0xcf8, PCI_ADDR(b, d, f, r)); return inw(0xcfc + (r & 2)); }
uint8_t pci_read8(int b, int d, int f, int r) { outl(0xcf8, PCI_ADDR(b, d, f, r)); return inb(0xcfc + (r & 3)); }
void pci_write32(int b, int d, int f, int r, uint32_t v) { outl(0xcf8, PCI_ADDR(b, d, f, r)); outl(0xcfc, v); }
void pci_write16(int b, int d, int f, int r, uint16_t v) { outl(0xcf8, PCI_ADDR(b, d, f, r)); outw(0xcfc + (r & 2), v); }
void pci_write8(int b, int d, int f, int r, uint8_t v) { outl(0xcf8, PCI_ADDR(b, d, f, r)); outb(0xcfc + (r & 3), v); }

#define I440FX_PAM0             0x59
#define PIIX3_DEV               1           /* 00:01.0 ISA bridge, .3 PM */
#define PIIX3_PIRQRC            0x60
#define PIIX4_PMBA              0x40
#define PIIX4_PMREGMISC         0x80

/* PIRQ A..D -> ISA IRQ; the DSDT's link devices report the same */
static const uint8_t pirq_irq[4] = { 10, 10, 11, 11 };

static uint32_t io_next = 0xc000, mem_next = 0xe0000000u;

/* PAM5/PAM6 cover 0xE0000-0xEFFFF: 0x33 = read and write DRAM,
 * 0x11 = read DRAM (the tables become read-only, as a BIOS leaves them). */
void bios_area_writable(int writable)
{
    uint8_t v = writable ? 0x33 : 0x11;
    pci_write8(0, 0, 0, I440FX_PAM0 + 5, v);
    pci_write8(0, 0, 0, I440FX_PAM0 + 6, v);
}

static void assign_bars(int dev, int fn)
{
    uint8_t hdr = pci_read8(0, dev, fn, 0x0e) & 0x7f;
    int nbars = hdr == 0 ? 6 : hdr == 1 ? 2 : 0;
    uint16_t cmd = pci_read16(0, dev, fn, 0x04);

    for (int i = 0; i < nbars; i++) {
        int reg = 0x10 + 4 * i;
        uint32_t old = pci_read32(0, dev, fn, reg);
        pci_write32(0, dev, fn, reg, 0xffffffff);
        uint32_t sz = pci_read32(0, dev, fn, reg);
        pci_write32(0, dev, fn, reg, old);
        if (sz == 0 || sz == 0xffffffff)
            continue;
        if (sz & 1) {                               /* I/O */
            uint32_t size = ~(sz & ~3u) + 1;
            size &= 0xffff;
            if (!size)
                continue;
            io_next = ALIGN_UP(io_next, size);
            pci_write32(0, dev, fn, reg, io_next);
            io_next += size;
            cmd |= 1;
        } else {                                    /* memory */
            int is64 = (sz & 6) == 4;
            uint32_t size = ~(sz & ~15u) + 1;
            if (is64) {
                pci_write32(0, dev, fn, reg + 4, 0xffffffff);
                uint32_t hi = pci_read32(0, dev, fn, reg + 4);
                if (hi != 0xffffffff) {             /* > 4 GiB: leave it */
                    pci_write32(0, dev, fn, reg + 4, 0);
                    i++;
                    continue;
                }
            }
            if (size >= 0x10000000u) {               /* too big for our hole */
                i += is64;
                continue;
            }
            mem_next = ALIGN_UP(mem_next, size);
            pci_write32(0, dev, fn, reg, mem_next);
            if (is64)
                pci_write32(0, dev, fn, reg + 4, 0);
            mem_next += size;
            cmd |= 2;
            i += is64;
        }
    }
    pci_write16(0, dev, fn, 0x04, cmd);
}

/* The PV callback device: MSI-X entry i -> vector HVM_CB_VECTOR_BASE + i,
 * fixed delivery to APIC id 0, unmasked; MSI-X on.  (An OS that takes the
 * device over may turn MSI-X off again: then vector callbacks stop.) */
static void callback_device_msix(int dev, int fn)
{
    uint8_t cap = pci_read8(0, dev, fn, 0x34) & 0xfc;
    for (int n = 0; cap && n < 48; n++, cap = pci_read8(0, dev, fn, cap + 1) & 0xfc) {
        if (pci_read8(0, dev, fn, cap) != 0x11)
            continue;
        uint16_t ctrl = pci_read16(0, dev, fn, cap + 2);
        uint32_t tbl = pci_read32(0, dev, fn, cap + 4);
        uint32_t bar = pci_read32(0, dev, fn, 0x10 + 4 * (tbl & 7)) & ~15u;
        volatile uint32_t *e = (volatile uint32_t *)(bar + (tbl & ~7u));
        unsigned int size = (ctrl & 0x7ff) + 1;
        if (!bar || size < HVM_CB_VECTORS) {
            printf("hvmloader: callback device %x.%x: no usable MSI-X table\n", dev, fn);
            return;
        }
        /* memory space, and bus master: QEMU drops the MSI writes of a
         * device that is not a bus master */
        pci_write16(0, dev, fn, 0x04, pci_read16(0, dev, fn, 0x04) | 6);
        for (unsigned int i = 0; i < HVM_CB_VECTORS; i++, e += 4) {
            e[0] = 0xfee00000u;                     /* APIC id 0, physical */
            e[1] = 0;
            e[2] = HVM_CB_VECTOR_BASE + i;          /* fixed, edge         */
            e[3] = 0;                               /* unmasked            */
        }
        pci_write16(0, dev, fn, cap + 2, (ctrl | 0x8000) & ~0x4000);
        return;
    }
}

void pci_setup(uint32_t low_mem_end)
{
    if (mem_next < low_mem_end)
        mem_next = ALIGN_UP(low_mem_end, 0x10000000u);

    /* interrupt routing and the ELCR (IRQ 9, 10, 11 level) */
    for (int i = 0; i < 4; i++)
        pci_write8(0, PIIX3_DEV, 0, PIIX3_PIRQRC + i, pirq_irq[i]);
    outb(0x4d0, 0x00);
    outb(0x4d1, (1 << (9 - 8)) | (1 << (10 - 8)) | (1 << (11 - 8)));

    /* the PIIX4 ACPI PM I/O block, ACPI mode on */
    pci_write32(0, PIIX3_DEV, 3, PIIX4_PMBA, HVM_PM_BASE | 1);
    pci_write8(0, PIIX3_DEV, 3, PIIX4_PMREGMISC, 1);
    outw(HVM_PM_BASE + 4, inw(HVM_PM_BASE + 4) | 1);       /* SCI_EN */

    for (int dev = 0; dev < 32; dev++) {
        int nfn = 1;
        for (int fn = 0; fn < nfn; fn++) {
            uint32_t id = pci_read32(0, dev, fn, 0);
            if ((id & 0xffff) == 0xffff)
                continue;
            if (fn == 0 && (pci_read8(0, dev, 0, 0x0e) & 0x80))
                nfn = 8;
            uint16_t cls = pci_read16(0, dev, fn, 0x0a);
            if (cls == 0x0600 || cls == 0x0601)      /* host, ISA bridge */
                continue;
            if (dev == PIIX3_DEV && fn == 3)          /* PM: done above   */
                goto irq;
            assign_bars(dev, fn);
            if (id == (HVM_CB_DEVICE << 16 | HVM_CB_VENDOR))
                callback_device_msix(dev, fn);
irq:
            {
                uint8_t pin = pci_read8(0, dev, fn, 0x3d);
                if (pin >= 1 && pin <= 4) {
                    /* QEMU's i440FX swizzle: (INTx + slot - 1) & 3 */
                    int pirq = (pin - 1 + dev - 1) & 3;
                    uint8_t irq = dev == PIIX3_DEV && fn == 3 ? HVM_SCI_IRQ : pirq_irq[pirq];
                    pci_write8(0, dev, fn, 0x3c, irq);
                }
            }
        }
    }
}
