#!/bin/sh
# Generate the repetitive parts of dsdt.asl into directory $1:
#   dsdt_prt.asl    _PRT: every slot's INTA-D to the links LNKA-D, with
#                   QEMU's i440FX swizzle (pin + slot - 1) & 3
#   dsdt_links.asl  the four PIIX3 interrupt links
#   dsdt_cpus.asl   one Processor per possible vCPU ($2, HVM_MAX_VCPUS)
set -e
out=$1
max=$2
links="A B C D"

{
    echo "Name (_PRT, Package ()"
    echo "{"
    slot=1
    while [ $slot -le 31 ]; do
        pin=0
        while [ $pin -le 3 ]; do
            l=$(( (pin + slot - 1) & 3 ))
            name=$(echo $links | cut -d' ' -f$((l + 1)))
            sep=","
            [ $slot -eq 31 ] && [ $pin -eq 3 ] && sep=""
            printf '    Package () { 0x%04XFFFF, %d, LNK%s, 0 }%s\n' $slot $pin $name "$sep"
            pin=$((pin + 1))
        done
        slot=$((slot + 1))
    done
    echo "})"
} > "$out/dsdt_prt.asl"

{
    uid=0
    for l in $links; do
        cat <<ASL
Device (LNK$l)
{
    Name (_HID, EisaId ("PNP0C0F"))
    Name (_UID, $uid)
    Name (_PRS, ResourceTemplate ()
    {
        Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, , , ) {5, 10, 11}
    })
    Method (_STA, 0, NotSerialized) { Return (IQST (PRQ$l)) }
    Method (_DIS, 0, NotSerialized) { Or (PRQ$l, 0x80, PRQ$l) }
    Method (_CRS, 0, NotSerialized) { Return (IQCR (PRQ$l)) }
    Method (_SRS, 1, NotSerialized)
    {
        CreateDWordField (Arg0, 0x05, PRRI)
        Store (PRRI, PRQ$l)
    }
}
ASL
        uid=$((uid + 1))
    done
} > "$out/dsdt_links.asl"

{
    i=0
    while [ $i -lt "$max" ]; do
        printf 'Processor (C%03X, 0x%02X, 0x00000000, 0x00) { Method (_STA, 0, NotSerialized) { Return (PSTA (0x%02X)) } }\n' $i $i $i
        i=$((i + 1))
    done
} > "$out/dsdt_cpus.asl"
