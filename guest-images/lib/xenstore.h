/*
 * A XenStore client over the shared ring (io/xs_wire.h, xenstore-ring.txt):
 * one request at a time, replies matched by req_id, watch events queued
 * as they arrive and handed out later (xs_read_watch, or callbacks run
 * from deferred work).
 */
#ifndef XENSTORE_H
#define XENSTORE_H

#include "compiler.h"
#include "xen-abi.h"

/* io/xs_wire.h */
enum xsd_sockmsg_type {
    XS_CONTROL, XS_DIRECTORY, XS_READ, XS_GET_PERMS, XS_WATCH, XS_UNWATCH,
    XS_TRANSACTION_START, XS_TRANSACTION_END, XS_INTRODUCE, XS_RELEASE,
    XS_GET_DOMAIN_PATH, XS_WRITE, XS_MKDIR, XS_RM, XS_SET_PERMS,
    XS_WATCH_EVENT, XS_ERROR,
};

struct xsd_sockmsg {
    uint32_t type;
    uint32_t req_id;
    uint32_t tx_id;             /* 0: no transaction */
    uint32_t len;               /* payload bytes that follow */
};

#define XENSTORE_RING_SIZE      1024
#define XENSTORE_PAYLOAD_MAX    4096
typedef uint32_t XENSTORE_RING_IDX;

struct xenstore_domain_interface {
    char req[XENSTORE_RING_SIZE];
    char rsp[XENSTORE_RING_SIZE];
    XENSTORE_RING_IDX req_cons, req_prod;
    XENSTORE_RING_IDX rsp_cons, rsp_prod;
    uint32_t server_features;
    uint32_t connection;
    uint32_t error;
    uint32_t evtchn_port;
};

_Static_assert(sizeof(struct xsd_sockmsg) == 16, "xsd_sockmsg");
_Static_assert(__builtin_offsetof(struct xenstore_domain_interface, req_cons) == 2048,
               "req_cons");
_Static_assert(__builtin_offsetof(struct xenstore_domain_interface, evtchn_port) == 2076,
               "evtchn_port");

typedef uint32_t xs_transaction_t;
#define XBT_NULL 0

/* Errors are negative errno values (Xen's numbering); 0 is success. */
#define XS_ETIMEDOUT 110        /* our own: xenstored did not answer */

/* Connect to the ring from start_info; 0 or negative error. */
int xs_init(void);
bool xs_ready(void);

/* The wire name of an error ("ENOENT") from a negative return value. */
const char *xs_strerror(int err);

/* Value into buf (NUL-terminated, truncated to size); returns its length. */
int xs_read(xs_transaction_t t, const char *path, char *buf, size_t size);
int xs_write(xs_transaction_t t, const char *path, const char *value);
int xs_rm(xs_transaction_t t, const char *path);
/* Children as NUL-separated names; returns the number of bytes. */
int xs_directory(xs_transaction_t t, const char *path, char *buf, size_t size);

int xs_transaction_start(xs_transaction_t *t);
/* Commit (abort = false) or abort; a conflict is -EAGAIN: start again. */
int xs_transaction_end(xs_transaction_t t, bool abort);

/* A relative path is below /local/domain/<our domid>. */
int xs_watch(const char *path, const char *token);
int xs_unwatch(const char *path, const char *token);

/*
 * Wait until deadline (system time, ns; 0: forever) for a queued watch
 * event with this token (NULL: any token).  Returns true and fills path.
 */
bool xs_read_watch(const char *token, char *path, size_t size, uint64_t deadline);

/* Run cb(path, token) for every event with token, from deferred work. */
typedef void (*xs_watch_cb)(const char *path, const char *token);
int xs_watch_callback(const char *path, const char *token, xs_watch_cb cb);

#endif /* XENSTORE_H */
