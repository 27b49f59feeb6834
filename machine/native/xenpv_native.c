/*
 * _xenpv_native: the few things Python cannot do on guest-shared memory,
 * as a small CPython extension.
 *
 *  - atomic read-modify-write and full fences (the guest changes the same
 *    words with locked instructions);
 *  - serve(): a vCPU's mailbox loop.  It waits for the shim's request
 *    without holding the GIL (spinning briefly with host_polling set, then
 *    sleeping on the doorbell fd), calls the Python handler once per
 *    request with the request kind and the guest's argument registers, and
 *    publishes the answer (kicking the guest if it went to sleep).
 *
 * Mailbox words (struct shim_mbox, firmware/shim/shim_abi.h):
 *   [0] req_seq  [1] req_kind  [2] resp_seq  [3] resp_action
 *   [4] host_polling  [5] guest_waiting
 * Registers: struct xen_regs at the top of the same page, ebx..eax first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define MB_REQ_SEQ       0
#define MB_REQ_KIND      1
#define MB_RESP_SEQ      2
#define MB_RESP_ACTION   3
#define MB_HOST_POLLING  4
#define MB_GUEST_WAITING 5
#define REGS_OFF         (4096 - 68)

static inline void mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* Wait until req_seq != last; see the module comment.  No GIL here. */
static uint32_t wait_request(volatile uint32_t *mbox, uint32_t last, uint64_t spin_ns,
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
    if (poll(&p, 1, timeout_ms) > 0)
        drain(fd);
    seq = mbox[MB_REQ_SEQ];
    mb();
    if (seq != last)
        mbox[MB_HOST_POLLING] = 1;
    return seq;
}

/* Publish an answer, then kick the guest if it went to sleep waiting for
 * it (Dekker with the shim's guest_waiting). */
static void complete(volatile uint32_t *mbox, uint32_t seq, uint32_t action, int kick_fd)
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
    }
}

/* serve(mbox_addr, doorbell_fd, kick_fd, spin_ns, timeout_ms, handler)
 * handler(kind, args) -> action (int >= 0), or a negative number to stop;
 * args is (ebx, ecx, edx, esi, edi, ebp, eax).  handler(0, None) is called
 * on each timeout so the owner can stop the loop.  Returns None. */
static PyObject *serve(PyObject *self, PyObject *a)
{
    unsigned long long addr, spin_ns;
    int fd, kick_fd, timeout_ms;
    PyObject *handler;
    if (!PyArg_ParseTuple(a, "KiiKiO", &addr, &fd, &kick_fd, &spin_ns, &timeout_ms, &handler))
        return NULL;
    volatile uint32_t *mbox = (volatile uint32_t *)(uintptr_t)addr;
    volatile uint32_t *regs = (volatile uint32_t *)((uintptr_t)addr + REGS_OFF);
    uint32_t last = mbox[MB_REQ_SEQ], seq;

    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        seq = wait_request(mbox, last, spin_ns, fd, timeout_ms);
        Py_END_ALLOW_THREADS
        PyObject *r;
        int got = seq != last;
        if (!got) {
            r = PyObject_CallFunction(handler, "iO", 0, Py_None);
        } else {
            last = seq;
            r = PyObject_CallFunction(handler, "I(IIIIIII)", mbox[MB_REQ_KIND],
                                      regs[0], regs[1], regs[2], regs[3], regs[4], regs[5], regs[6]);
        }
        if (!r)
            return NULL;
        long action = PyLong_AsLong(r);
        Py_DECREF(r);
        if (action == -1 && PyErr_Occurred())
            return NULL;
        if (action < 0)
            Py_RETURN_NONE;
        if (got)
            complete(mbox, seq, (uint32_t)action, kick_fd);
    }
}

/* ---- atomics on guest RAM (addresses are integers) ---- */
static PyObject *test_and_set_bit(PyObject *self, PyObject *a)
{
    unsigned long long base;
    unsigned nr;
    if (!PyArg_ParseTuple(a, "KI", &base, &nr))
        return NULL;
    volatile uint32_t *w = (volatile uint32_t *)(uintptr_t)base + (nr >> 5);
    uint32_t m = 1u << (nr & 31);
    return PyBool_FromLong((__atomic_fetch_or(w, m, __ATOMIC_SEQ_CST) & m) != 0);
}

static PyObject *test_and_clear_bit(PyObject *self, PyObject *a)
{
    unsigned long long base;
    unsigned nr;
    if (!PyArg_ParseTuple(a, "KI", &base, &nr))
        return NULL;
    volatile uint32_t *w = (volatile uint32_t *)(uintptr_t)base + (nr >> 5);
    uint32_t m = 1u << (nr & 31);
    return PyBool_FromLong((__atomic_fetch_and(w, ~m, __ATOMIC_SEQ_CST) & m) != 0);
}

static PyObject *xchg32(PyObject *self, PyObject *a)
{
    unsigned long long p;
    unsigned v;
    if (!PyArg_ParseTuple(a, "KI", &p, &v))
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_exchange_n((volatile uint32_t *)(uintptr_t)p, v,
                                                       __ATOMIC_SEQ_CST));
}

static PyObject *cmpxchg32(PyObject *self, PyObject *a)
{
    unsigned long long p;
    unsigned old, new_;
    if (!PyArg_ParseTuple(a, "KII", &p, &old, &new_))
        return NULL;
    __atomic_compare_exchange_n((volatile uint32_t *)(uintptr_t)p, &old, new_, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLong(old);
}

static PyObject *xchg8(PyObject *self, PyObject *a)
{
    unsigned long long p;
    unsigned char v;
    if (!PyArg_ParseTuple(a, "Kb", &p, &v))
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_exchange_n((volatile uint8_t *)(uintptr_t)p, v,
                                                       __ATOMIC_SEQ_CST));
}

static PyObject *fence(PyObject *self, PyObject *unused)
{
    mb();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, "serve a vCPU mailbox"},
    {"test_and_set_bit", test_and_set_bit, METH_VARARGS, "atomic bts"},
    {"test_and_clear_bit", test_and_clear_bit, METH_VARARGS, "atomic btr"},
    {"xchg32", xchg32, METH_VARARGS, "atomic exchange"},
    {"cmpxchg32", cmpxchg32, METH_VARARGS, "atomic compare-exchange"},
    {"xchg8", xchg8, METH_VARARGS, "atomic byte exchange"},
    {"fence", fence, METH_NOARGS, "full memory barrier"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_xenpv_native", "guest-shared memory helpers", -1, methods,
};

PyMODINIT_FUNC PyInit__xenpv_native(void)
{
    return PyModule_Create(&module);
}
