/* tvmq startup for Cortex-M on QEMU's mps2 boards: vector table, reset handler, fault report, heap for newlib.
 *
 * Replaces newlib's rdimon crt0 (linked with -nostartfiles) so the stack is a fixed, named region the memory
 * report can measure, and faults print a message and end QEMU instead of hanging until the host's timeout.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tvmq_semihost.h"
#include "tvmq_startup.h"

extern uint32_t __data_load__[], __data_start__[], __data_end__[];
extern uint32_t __bss_start__[], __bss_end__[];
extern char __heap_start__[], __heap_end__[];

extern int main(void);
extern void initialise_monitor_handles(void);

void Reset_Handler(void);
void SysTick_Handler(void);
void tvmq_fault_entry(void);

/* SysTick wraps since boot: extends the 24-bit counter (see harness.c). */
volatile uint32_t tvmq_systick_wraps;

__attribute__((section(".vectors"), used)) const void *const tvmq_vectors[16] = {
    __tvmq_stack_top__,        /* initial MSP: top of the .stack region */
    (const void *)Reset_Handler,
    (const void *)tvmq_fault_entry, /* NMI */
    (const void *)tvmq_fault_entry, /* HardFault */
    (const void *)tvmq_fault_entry, /* MemManage */
    (const void *)tvmq_fault_entry, /* BusFault */
    (const void *)tvmq_fault_entry, /* UsageFault */
    (const void *)tvmq_fault_entry, /* SecureFault (ARMv8-M) */
    0,
    0,
    0,
    (const void *)tvmq_fault_entry, /* SVCall */
    (const void *)tvmq_fault_entry, /* DebugMonitor */
    0,
    (const void *)tvmq_fault_entry, /* PendSV */
    (const void *)SysTick_Handler,
};

void SysTick_Handler(void) { tvmq_systick_wraps++; }

/* An MPU region over the lowest 32 bytes of the stack: an overflow faults at once (reported as such) instead of
 * writing into whatever lies below RAM. ID_MMFR0 tells PMSAv7 (M3/M4/M7) from PMSAv8 (M33); no MPU, no guard. */
static void tvmq_stack_guard(void) {
    volatile uint32_t *const mpu_type = (volatile uint32_t *)0xE000ED90u;
    volatile uint32_t *const mpu_ctrl = (volatile uint32_t *)0xE000ED94u;
    volatile uint32_t *const mpu_rnr = (volatile uint32_t *)0xE000ED98u;
    volatile uint32_t *const mpu_rbar = (volatile uint32_t *)0xE000ED9Cu;
    volatile uint32_t *const mpu_rasr_rlar = (volatile uint32_t *)0xE000EDA0u;
    const uint32_t pmsa = ((*(volatile uint32_t *)0xE000ED50u) >> 4) & 0xFu;
    const uint32_t base = (uint32_t)__tvmq_stack_bottom__;
    if (((*mpu_type >> 8) & 0xFFu) == 0u || (base & (TVMQ_STACK_GUARD_BYTES - 1u)) != 0u) {
        return;
    }
    *mpu_rnr = 0u;
    if (pmsa == 4u) {                      /* PMSAv8: read-only for everyone, execute-never */
        *mpu_rbar = base | (3u << 1) | 1u; /* AP=RO any, XN */
        *mpu_rasr_rlar = base | 1u;        /* limit = base (32-byte granule), enable, attribute 0 */
    } else if (pmsa == 3u) {               /* PMSAv7: no access, execute-never, 32 bytes */
        *mpu_rbar = base;
        *mpu_rasr_rlar = (1u << 28) | (4u << 1) | 1u; /* XN, SIZE=2^(4+1), enable */
    } else {
        return;
    }
    *mpu_ctrl = (1u << 2) | 1u; /* PRIVDEFENA (default map elsewhere), ENABLE */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}

/* Plain word loops: keep gcc from turning them into memcpy/memset calls before the C environment exists. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) void Reset_Handler(void) {
    for (uint32_t *src = __data_load__, *dst = __data_start__; dst < __data_end__;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = __bss_start__; dst < __bss_end__;) {
        *dst++ = 0;
    }
#if defined(__ARM_FP)
    /* Hard-float code: grant full access to CP10/CP11 (the FPU) before the first VFP instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    tvmq_stack_guard();
    initialise_monitor_handles();
    exit(main());
}

/* Heap between the end of .bss and the end of RAM. newlib's own _sbrk refuses to grow above the stack pointer,
 * which is always the case here because the stack sits at the bottom of RAM (an overflow then faults instead of
 * silently overwriting the arena). */
void *_sbrk(ptrdiff_t incr) {
    static char *heap_end = __heap_start__;
    if (incr < 0 || heap_end + incr > __heap_end__) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *prev = heap_end;
    heap_end += incr;
    return prev;
}

static char tvmq_hex_digit(uint32_t v) { return (char)(v < 10 ? '0' + v : 'a' + v - 10); }

static void tvmq_put_hex(const char *label, uint32_t value) {
    char text[40];
    uint32_t n = 0;
    while (label[n] != '\0' && n < 24) {
        text[n] = label[n];
        n++;
    }
    text[n++] = '0';
    text[n++] = 'x';
    for (int shift = 28; shift >= 0; shift -= 4) {
        text[n++] = tvmq_hex_digit((value >> shift) & 0xFu);
    }
    text[n] = '\0';
    tvmq_sh_puts(text);
}

/* Runs on its own small stack: the fault may be a stack overflow. Prints one line the host parses, then exits. */
__attribute__((used)) void tvmq_fault_report(uint32_t ipsr) {
    tvmq_put_hex("\ntvmq-fault ", ipsr & 0x1FFu);
    tvmq_put_hex(" cfsr=", *(volatile uint32_t *)0xE000ED28u);
    tvmq_put_hex(" hfsr=", *(volatile uint32_t *)0xE000ED2Cu);
    tvmq_put_hex(" mmfar=", *(volatile uint32_t *)0xE000ED34u);
    tvmq_put_hex(" bfar=", *(volatile uint32_t *)0xE000ED38u);
    tvmq_put_hex(" stack_bottom=", (uint32_t)__tvmq_stack_bottom__);
    tvmq_sh_puts("\n");
    tvmq_sh_exit(0 /* error */);
}

__attribute__((used, aligned(8))) static uint32_t tvmq_fault_stack[64];

__attribute__((naked)) void tvmq_fault_entry(void) {
    __asm__ volatile(
        "ldr r1, =tvmq_fault_stack + 256\n\t"
        "mov sp, r1\n\t"
        "mrs r0, ipsr\n\t"
        "ldr r2, =tvmq_fault_report\n\t"
        "bx r2\n\t"
        ".ltorg");
}
