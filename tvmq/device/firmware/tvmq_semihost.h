/* Minimal ARM semihosting calls (bkpt 0xAB) for tvmq's firmware harness.
 *
 * Why our own and not newlib's stdio: binary host-file I/O without malloc/FILE buffers, so the harness adds almost
 * nothing to the RAM report and works even before/without newlib's heap. QEMU needs
 * -semihosting-config enable=on,target=native; paths are relative to QEMU's working directory.
 */
#ifndef TVMQ_SEMIHOST_H
#define TVMQ_SEMIHOST_H

#include <stdint.h>

#define TVMQ_SYS_OPEN 0x01
#define TVMQ_SYS_CLOSE 0x02
#define TVMQ_SYS_WRITE0 0x04
#define TVMQ_SYS_WRITE 0x05
#define TVMQ_SYS_READ 0x06
#define TVMQ_SYS_EXIT 0x18

#define TVMQ_OPEN_RB 1 /* fopen mode "rb" */
#define TVMQ_OPEN_WB 5 /* fopen mode "wb" */

#define TVMQ_ADP_EXIT_OK 0x20026u    /* ADP_Stopped_ApplicationExit: QEMU exits with status 0 */
#define TVMQ_ADP_EXIT_ERROR 0x20023u /* ADP_Stopped_RunTimeErrorUnknown: QEMU exits with status 1 */

static inline int32_t tvmq_sh_call(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

static inline uint32_t tvmq_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}

/* Returns a host handle (>= 0) or -1. */
static inline int32_t tvmq_sh_open(const char *path, uint32_t mode) {
    uint32_t block[3] = {(uint32_t)path, mode, tvmq_strlen(path)};
    return tvmq_sh_call(TVMQ_SYS_OPEN, block);
}

static inline int32_t tvmq_sh_close(int32_t fd) {
    uint32_t block[1] = {(uint32_t)fd};
    return tvmq_sh_call(TVMQ_SYS_CLOSE, block);
}

/* Returns 0 when all len bytes were written. */
static inline int32_t tvmq_sh_write(int32_t fd, const void *buf, uint32_t len) {
    uint32_t block[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return tvmq_sh_call(TVMQ_SYS_WRITE, block);
}

/* Returns 0 when all len bytes were read (semihosting returns the number of bytes NOT read). */
static inline int32_t tvmq_sh_read(int32_t fd, void *buf, uint32_t len) {
    uint32_t block[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return tvmq_sh_call(TVMQ_SYS_READ, block);
}

static inline void tvmq_sh_puts(const char *s) { (void)tvmq_sh_call(TVMQ_SYS_WRITE0, s); }

/* Ends QEMU at once: status 0 for ok, 1 otherwise (AArch32 SYS_EXIT carries no status code). */
static inline void tvmq_sh_exit(int ok) {
    (void)tvmq_sh_call(TVMQ_SYS_EXIT, (const void *)(ok ? TVMQ_ADP_EXIT_OK : TVMQ_ADP_EXIT_ERROR));
    for (;;) {
    }
}

#endif
