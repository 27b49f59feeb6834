/*
 * The few things Python cannot do on guest-shared memory: atomic
 * read-modify-write (the guest changes the same words with locked
 * instructions), full fences, and waiting on the mailbox without holding
 * the GIL.  Loaded with ctypes, which releases the GIL around each call.
 *
 * Mailbox words (struct shim_vcpu, firmware/shim/shim_abi.h):
 *   [0] req_seq  [1] req_kind  [2] resp_seq  [3] resp_action
 *   [4] host_polling  [5] guest_waiting
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define MB_REQ_SEQ       0
#define MB_RESP_SEQ      2
#define MB_RESP_ACTION   3
#define MB_HOST_POLLING  4
#define MB_GUEST_WAITING 5

static inline void mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int xp_test_and_set_bit(volatile uint32_t *base, unsigned nr)
{
    uint32_t m = 1u << (nr & 31);
    return (__atomic_fetch_or(&base[nr >> 5], m, __ATOMIC_SEQ_CST) & m) != 0;
}

int xp_test_and_clear_bit(volatile uint32_t *base, unsigned nr)
{
    uint32_t m = 1u << (nr & 31);
    return (__atomic_fetch_and(&base[nr >> 5], ~m, __ATOMIC_SEQ_CST) & m) != 0;
}

uint32_t xp_xchg32(volatile uint32_t *p, uint32_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

uint32_t xp_cmpxchg32(volatile uint32_t *p, uint32_t old, uint32_t new_)
{
    __atomic_compare_exchange_n(p, &old, new_, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return old;
}

uint8_t xp_xchg8(volatile uint8_t *p, uint8_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

void xp_mb(void) { mb(); }

static void drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/*
 * Wait until the guest posts a request (req_seq != last).  Spin for spin_ns
 * with host_polling set (the guest skips its doorbell), then clear it, fence
 * and sleep on the doorbell fd.  Returns the new req_seq, or `last` when
 * timeout_ms passed or the fd woke us without a request (a stop request).
 * fd < 0: no doorbell, poll the mailbox until the timeout.
 */
uint32_t xp_wait_request(volatile uint32_t *mbox, uint32_t last, uint64_t spin_ns,
                         int fd, int timeout_ms)
{
    uint64_t deadline = now_ns() + spin_ns;
    uint32_t seq;

    while ((seq = mbox[MB_REQ_SEQ]) == last) {
        if (now_ns() > deadline)
            break;
        __builtin_ia32_pause();
    }
    if (seq != last) {
        mb();
        return seq;
    }
    if (fd < 0) {
        uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
        while ((seq = mbox[MB_REQ_SEQ]) == last && now_ns() < end)
            __builtin_ia32_pause();
        mb();
        return seq;
    }
    mbox[MB_HOST_POLLING] = 0;
    mb();
    if ((seq = mbox[MB_REQ_SEQ]) != last) {
        mbox[MB_HOST_POLLING] = 1;
        return seq;
    }
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r = poll(&p, 1, timeout_ms);
    if (r > 0)
        drain(fd);
    seq = mbox[MB_REQ_SEQ];
    mb();
    if (seq != last)
        mbox[MB_HOST_POLLING] = 1;
    return seq;
}

/*
 * Publish an answer: the action word, then resp_seq, then kick the guest
 * if it went to sleep waiting (Dekker with the shim's guest_waiting).
 * Returns 1 if a kick was sent.
 */
int xp_complete(volatile uint32_t *mbox, uint32_t seq, uint32_t action, int kick_fd)
{
    mbox[MB_RESP_ACTION] = action;
    __atomic_store_n(&mbox[MB_RESP_SEQ], seq, __ATOMIC_SEQ_CST);
    mb();
    if (mbox[MB_GUEST_WAITING] && kick_fd >= 0) {
        uint64_t one = 1;
        ssize_t n;
        do
            n = write(kick_fd, &one, sizeof(one));
        while (n < 0 && errno == EINTR);
        return 1;
    }
    return 0;
}
