/*
 * hvmloader: the vmxloader/hvmloader role for qemu-xenpv HVM domains.
 * Freestanding i686 code, flat 32-bit protected mode, paging off.
 */
#ifndef HVMLOADER_H
#define HVMLOADER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "hvm_info.h"

/* the selectors of the loader's GDT (head.S); 0x10/0x18 are also the
 * __BOOT_CS/__BOOT_DS the Linux 32-bit boot protocol requires          */
#define SEL_CODE32      0x10
#define SEL_DATA32      0x18
#define SEL_CODE16      0x20
#define SEL_DATA16      0x28
#define SEL_TSS         0x30

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

#define ARRAY_SIZE(a)   (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a)  (((x) + (a) - 1) & ~((a) - 1))

/* lib.c */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
void uart_init(void);
void putchar(char c);
void puts(const char *s);
int vprintf(const char *fmt, va_list ap);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void __attribute__((noreturn)) power_off(void);
void __attribute__((noreturn)) fail(const char *why);

/* pci.c */
uint32_t pci_read32(int bus, int dev, int fn, int reg);
uint16_t pci_read16(int bus, int dev, int fn, int reg);
uint8_t pci_read8(int bus, int dev, int fn, int reg);
void pci_write32(int bus, int dev, int fn, int reg, uint32_t v);
void pci_write16(int bus, int dev, int fn, int reg, uint16_t v);
void pci_write8(int bus, int dev, int fn, int reg, uint8_t v);
void pci_setup(uint32_t low_mem_end);
void bios_area_writable(int writable);

/* fw_cfg.c */
int fw_cfg_nb_cpus(void);

/* boot.c */
void __attribute__((noreturn)) boot_guest(struct hvm_boot_info *bi);

/* head.S */
void __attribute__((noreturn)) enter_linux(uint32_t entry, uint32_t boot_params);
void __attribute__((noreturn)) enter_pvh(uint32_t entry, uint32_t start_info);
void __attribute__((noreturn)) enter_realmode(uint32_t cs_ip);
void __attribute__((noreturn)) enter_multiboot(uint32_t entry, uint32_t multiboot_info);
extern const uint8_t dsdt_aml[], dsdt_aml_end[];

#endif /* HVMLOADER_H */
