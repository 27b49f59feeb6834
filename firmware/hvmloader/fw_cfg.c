/* QEMU's fw_cfg I/O interface (selector 0x510, data 0x511): the one
 * place where the hardware itself says how many CPUs it has.          */
#include "hvmloader.h"

#define FW_CFG_PORT_SEL     0x510
#define FW_CFG_PORT_DATA    0x511
#define FW_CFG_SIGNATURE    0x00
#define FW_CFG_NB_CPUS      0x05

static void fw_cfg_read(uint16_t key, void *buf, int len)
{
    uint8_t *p = buf;
    outw(FW_CFG_PORT_SEL, key);
    while (len--)
        *p++ = inb(FW_CFG_PORT_DATA);
}

/* -1 when there is no fw_cfg (not QEMU) */
int fw_cfg_nb_cpus(void)
{
    char sig[4];
    uint16_t n;
    fw_cfg_read(FW_CFG_SIGNATURE, sig, 4);
    if (memcmp(sig, "QEMU", 4))
        return -1;
    fw_cfg_read(FW_CFG_NB_CPUS, &n, 2);
    return n;
}
