/* Shim internals: x86 helpers and the small API between the shim's files. */
#ifndef SHIM_H
#define SHIM_H

#include <stdint.h>
#include <stddef.h>
#include "shim_abi.h"

#define barrier()   __asm__ __volatile__("" ::: "memory")
#define mb()        __asm__ __volatile__("lock; orl $0,(%%esp)" ::: "memory")
#define cpu_relax() __asm__ __volatile__("pause" ::: "memory")
#define unreachable() __builtin_unreachable()
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void outb(uint16_t port, uint8_t v)
{ __asm__ __volatile__("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v)
{ __asm__ __volatile__("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint32_t inl(uint16_t port)
{ uint32_t v; __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t read_cr0(void)
{ uint32_t v; __asm__ __volatile__("mov %%cr0, %0" : "=r"(v)); return v; }
static inline void write_cr0(uint32_t v)
{ __asm__ __volatile__("mov %0, %%cr0" :: "r"(v) : "memory"); }
static inline uint32_t read_cr2(void)
{ uint32_t v; __asm__ __volatile__("mov %%cr2, %0" : "=r"(v)); return v; }
static inline void mmio_write32(uint32_t addr, uint32_t v)
{ *(volatile uint32_t *)addr = v; }
static inline uint32_t mmio_read32(uint32_t addr)
{ return *(volatile uint32_t *)addr; }
static inline void sti_hlt_cli(void)
{ __asm__ __volatile__("sti; hlt; cli" ::: "memory"); }
static inline int test_and_set_bit(unsigned nr, volatile void *addr)
{
    int old;
    __asm__ __volatile__("lock; btsl %2, %1; sbbl %0, %0"
                         : "=r"(old), "+m"(*(volatile uint32_t *)addr)
                         : "Ir"(nr) : "memory");
    return old;
}
static inline int test_bit(unsigned nr, const volatile void *addr)
{
    return (((const volatile uint32_t *)addr)[nr >> 5] >> (nr & 31)) & 1;
}

/* Record the exception about to be bounced to the guest (crash reports). */
static inline void note_trap(struct shim_mbox *m, uint32_t vector, uint32_t errcode,
                             const struct xen_regs *r, uint32_t cr2)
{
    m->last_trap_vector = vector + 1;
    m->last_trap_errcode = errcode;
    m->last_trap_eip = r->eip;
    m->last_trap_cs = r->cs;
    m->last_trap_cr2 = cr2;
}

/* lib.c */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
__attribute__((noreturn)) void panic(const char *msg, uint32_t a, uint32_t b);

/* time.c */
void time_init(void);
uint64_t shim_now(void);
void time_update_vcpu(struct shim_vcpu *v);
void timer_arm(struct shim_vcpu *v);
void timer_irq(struct shim_vcpu *v);
void lapic_init(void);
void lapic_eoi(void);
void lapic_start_ap(uint32_t apic_id);
uint32_t lapic_id(void);

/* pci.c */
void ivshmem_init(void);
void doorbell_ring(struct shim_vcpu *v);

/* entry.c */
extern struct shim_boot shim_boot;
extern struct shim_pcpu shim_pcpu[SHIM_MAX_VCPUS];
struct shim_vcpu *this_vcpu(void);
void shim_enter_guest_first(struct shim_vcpu *v);
void evtchn_set_pending(struct shim_vcpu *v, unsigned port);

/* entry.S */
extern char entry_stubs[], hypercall_entry[];
extern char exit_fault_start[], exit_fault_end[];
__attribute__((noreturn)) void shim_exit_to_guest(struct xen_regs *frame, uint32_t cr3);
void shim_resume(struct xen_regs *frame);

#endif
