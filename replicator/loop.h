/* The loop thread: one thread owns an io_uring ring (or, where io_uring is
 * unavailable, a libaio context) and an eventfd, and multiplexes many I/Os.
 * Other threads hand it requests through a queue and are told of completion
 * through a callback run on the loop thread. It will also own the peer link,
 * the Secondary's application of received writes and resync: whatever one
 * thread drives many of. */
#ifndef HB_LOOP_H
#define HB_LOOP_H

#include <linux/time_types.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "queue.h"

/* CLOCK_MONOTONIC in nanoseconds: deadlines, timers, pings. */
static inline uint64_t hb_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

enum hb_op {
  HB_OP_READ,
  HB_OP_WRITE,
  HB_OP_FDATASYNC,
  HB_OP_FALLOCATE,
  HB_OP_SEND,           /* socket: the whole buffer (short sends resumed) */
  HB_OP_RECV,           /* socket: whatever arrives; res = bytes, 0 = EOF */
  HB_OP_TIMEOUT,        /* fires after req->timeout_ns; res = 0 */
  HB_OP_CALL,           /* no I/O: run complete() on the loop thread */
};

struct hb_req {
  enum hb_op op;        /* first field: the dispatch key */
  int fd;
  int mode;             /* HB_OP_FALLOCATE: fallocate mode */
  int rw_flags;         /* HB_OP_WRITE: RWF_DSYNC for FUA */
  char *buf;
  uint64_t off;
  uint64_t len;
  uint64_t done;        /* bytes transferred so far (short I/O) */
  int res;              /* 0 (RECV: bytes) or -errno once complete */
  uint64_t timeout_ns;  /* HB_OP_TIMEOUT */
  struct __kernel_timespec ts;  /* HB_OP_TIMEOUT: the ring reads it */
  struct hb_qnode qn;
  void (*complete)(struct hb_req *req);  /* runs on the loop thread */
  void *opaque;
  void *opaque2;
};

static inline struct hb_req *hb_req_of(struct hb_qnode *n)
{
  return (struct hb_req *) ((char *) n - offsetof(struct hb_req, qn));
}

enum hb_loop_kind { HB_LOOP_URING, HB_LOOP_AIO };

struct hb_loop;

/* Can this kind of loop be created here? Returns 0 or -errno with err
 * filled (io_uring disabled by sysctl or seccomp, libaio not compiled...). */
int hb_loop_probe(enum hb_loop_kind kind, unsigned depth, char *err, size_t errlen);
int hb_loop_start(enum hb_loop_kind kind, unsigned depth, struct hb_loop **out,
                  char *err, size_t errlen);
void hb_loop_stop(struct hb_loop *l);
/* Hand a request to the loop (any thread). req->complete runs on the loop. */
int hb_loop_submit(struct hb_loop *l, struct hb_req *req);
/* From the loop thread itself (a completion callback): queue a request. */
void hb_loop_submit_local(struct hb_loop *l, struct hb_req *req);
/* Submit and wait on the caller's thread; returns req->res. */
int hb_loop_run(struct hb_loop *l, struct hb_req *req);
bool hb_loop_can(const struct hb_loop *l, enum hb_op op);

/* --- for the backends (loop_uring.c, loop_aio.c) --- */
struct hb_loop_ops {
  const char *name;
  int (*probe)(unsigned depth, char *err, size_t errlen);
  int (*init)(struct hb_loop *l, char *err, size_t errlen);
  void (*run)(struct hb_loop *l);    /* returns when l->stopping is seen */
  void (*fini)(struct hb_loop *l);
  /* On the loop thread: queue a request without the eventfd round trip. */
  void (*push_local)(struct hb_loop *l, struct hb_req *req);
  unsigned ops_mask;                 /* 1u << enum hb_op it can carry */
};

struct hb_loop {
  const struct hb_loop_ops *ops;
  struct hb_queue queue;
  unsigned depth;
  unsigned ops_missing;              /* of ops_mask, what this kernel lacks */
  volatile bool stopping;
  void *priv;                        /* the backend's state */
};

extern const struct hb_loop_ops hb_loop_uring_ops;
extern const struct hb_loop_ops hb_loop_aio_ops;

/* Account for a completion of res bytes (or -errno); returns true when the
 * request is finished (req->res set), false when it must be resubmitted for
 * the rest (short transfer, EAGAIN, EINTR). */
bool hb_req_progress(struct hb_req *req, long res);

#endif
