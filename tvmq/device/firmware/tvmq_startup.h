/* What tvmq's startup code shares with the harness: linker-script symbols, the SysTick wrap count, the guard. */
#ifndef TVMQ_STARTUP_H
#define TVMQ_STARTUP_H

#include <stdint.h>

/* Lowest bytes of the stack, made inaccessible by the MPU so an overflow faults (see startup.c). */
#define TVMQ_STACK_GUARD_BYTES 32u

extern uint32_t __tvmq_stack_bottom__[], __tvmq_stack_top__[];
extern volatile uint32_t tvmq_systick_wraps;

#endif
