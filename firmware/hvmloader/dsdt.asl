/*
 * The DSDT of qemu-xenpv HVM domains: QEMU's `pc` machine (i440FX host
 * bridge, PIIX3 ISA bridge with its PCI interrupt router, PIIX4 ACPI PM)
 * as hvmloader set it up (firmware/hvmloader/pci.c).  The processor
 * objects and the PCI routing table are generated (mk_dsdt_parts.sh):
 * one Processor per possible vCPU (HVM_MAX_VCPUS), present when its
 * ACPI id is below the count the loader put in the MADT.
 */
DefinitionBlock ("", "DSDT", 2, "XENPV ", "QEMUHVM ", 2)
{
    /* S5 soft-off: SLP_TYP 0 on QEMU's PIIX4 */
    Name (\_S5, Package (0x04) { Zero, Zero, Zero, Zero })

    Name (PICM, Zero)
    Method (\_PIC, 1, NotSerialized)
    {
        Store (Arg0, PICM)
    }

    /* struct hvm_boot_info at 0x9F900: nr_vcpus at +40 (hvm_info.h) */
    OperationRegion (HVMI, SystemMemory, 0x0009F928, 0x04)
    Field (HVMI, DWordAcc, NoLock, Preserve)
    {
        NCPU, 32
    }

    Method (PSTA, 1, NotSerialized)
    {
        If (LLess (Arg0, NCPU))
        {
            Return (0x0F)
        }
        Return (Zero)
    }

    Scope (\_SB)
    {
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, Zero)
            Name (_BBN, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
                    0x0000, 0x0000, 0x00FF, 0x0000, 0x0100)
                IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000, 0x0000, 0x0CF7, 0x0000, 0x0CF8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,
                    0x00000000, 0x000A0000, 0x000BFFFF, 0x00000000, 0x00020000)
                /* the PCI hole: RAM ends at or below 3 GiB (layout.py) */
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                    0x00000000, 0xC0000000, 0xFEBFFFFF, 0x00000000, 0x3EC00000)
            })

            Include ("dsdt_prt.asl")

            Device (ISA)
            {
                Name (_ADR, 0x00010000)
                OperationRegion (PIRQ, PCI_Config, 0x60, 0x04)

                Device (PIC)
                {
                    Name (_HID, EisaId ("PNP0000"))
                    Name (_CRS, ResourceTemplate ()
                    {
                        IO (Decode16, 0x0020, 0x0020, 0x01, 0x02)
                        IO (Decode16, 0x00A0, 0x00A0, 0x01, 0x02)
                        IRQNoFlags () {2}
                    })
                }
                Device (TMR)
                {
                    Name (_HID, EisaId ("PNP0100"))
                    Name (_CRS, ResourceTemplate ()
                    {
                        IO (Decode16, 0x0040, 0x0040, 0x01, 0x04)
                        IRQNoFlags () {0}
                    })
                }
                Device (RTC)
                {
                    Name (_HID, EisaId ("PNP0B00"))
                    Name (_CRS, ResourceTemplate ()
                    {
                        IO (Decode16, 0x0070, 0x0070, 0x01, 0x08)
                        IRQNoFlags () {8}
                    })
                }
                Device (KBD)
                {
                    Name (_HID, EisaId ("PNP0303"))
                    Name (_CRS, ResourceTemplate ()
                    {
                        IO (Decode16, 0x0060, 0x0060, 0x01, 0x01)
                        IO (Decode16, 0x0064, 0x0064, 0x01, 0x01)
                        IRQNoFlags () {1}
                    })
                }
                Device (COM1)
                {
                    Name (_HID, EisaId ("PNP0501"))
                    Name (_UID, One)
                    Name (_CRS, ResourceTemplate ()
                    {
                        IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
                        IRQNoFlags () {4}
                    })
                }
                /* QEMU's pvpanic: a guest panic crashes the domain */
                Device (PEVT)
                {
                    Name (_HID, "QEMU0001")
                    Name (_CRS, ResourceTemplate ()
                    {
                        IO (Decode16, 0x0505, 0x0505, 0x01, 0x01)
                    })
                }
            }
        }

        /* PIIX3 PIRQ routing registers: bit 7 set = disabled */
        Field (\_SB.PCI0.ISA.PIRQ, ByteAcc, NoLock, Preserve)
        {
            PRQA, 8,
            PRQB, 8,
            PRQC, 8,
            PRQD, 8
        }

        Method (IQST, 1, NotSerialized)
        {
            If (And (0x80, Arg0))
            {
                Return (0x09)
            }
            Return (0x0B)
        }

        Method (IQCR, 1, NotSerialized)
        {
            Store (ResourceTemplate ()
            {
                Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, , , ) {0}
            }, Local0)
            CreateDWordField (Local0, 0x05, PRRI)
            If (LLess (Arg0, 0x80))
            {
                Store (Arg0, PRRI)
            }
            Return (Local0)
        }

        Include ("dsdt_links.asl")
        Include ("dsdt_cpus.asl")
    }
}
