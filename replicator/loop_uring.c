/* The io_uring loop: one ring, owned by the loop thread.
 *
 * Ring flags: none. SQPOLL would spin a kernel thread on one of this
 * machine's two cores; COOP_TASKRUN/DEFER_TASKRUN are left for a measured
 * change. The queue's eventfd is read through the ring itself, so the thread
 * sleeps in exactly one place (io_uring_submit_and_wait) whether it waits for
 * new requests or for completions. */
#include "hb-build.h"
#if HAVE_LIBURING

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "loop.h"

struct uring_state {
  struct io_uring ring;
  uint64_t kick_value;          /* target of the eventfd read */
  unsigned in_flight;
  struct hb_qlist pending;      /* taken from the queue, not yet in the ring */
};

/* user_data for the eventfd read: no request has this address. */
static char kick_token;

static int uring_probe(unsigned depth, char *err, size_t errlen)
{
  struct io_uring ring;
  int r = io_uring_queue_init(depth, &ring, 0);

  if (r < 0)
    return hb_fail(err, errlen, -r, "io_uring_queue_init: %s", strerror(-r));
  io_uring_queue_exit(&ring);
  return 0;
}

static int uring_init(struct hb_loop *l, char *err, size_t errlen)
{
  struct uring_state *s = calloc(1, sizeof *s);
  int r;

  if (!s)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  r = io_uring_queue_init(l->depth + 1, &s->ring, 0);
  if (r < 0) {
    free(s);
    return hb_fail(err, errlen, -r, "io_uring_queue_init: %s", strerror(-r));
  }
  hb_qlist_init(&s->pending);
  l->priv = s;
  return 0;
}

static void uring_fini(struct hb_loop *l)
{
  struct uring_state *s = l->priv;

  io_uring_queue_exit(&s->ring);
  free(s);
}

static void prep(struct io_uring_sqe *sqe, struct hb_req *req)
{
  switch (req->op) {
  case HB_OP_READ:
    io_uring_prep_read(sqe, req->fd, req->buf + req->done,
                       (unsigned) (req->len - req->done), req->off + req->done);
    break;
  case HB_OP_WRITE:
    io_uring_prep_write(sqe, req->fd, req->buf + req->done,
                        (unsigned) (req->len - req->done), req->off + req->done);
    sqe->rw_flags = req->rw_flags;
    break;
  case HB_OP_FDATASYNC:
    io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
    break;
  case HB_OP_FALLOCATE:
    io_uring_prep_fallocate(sqe, req->fd, req->mode, req->off, req->len);
    break;
  case HB_OP_SEND:
    io_uring_prep_send(sqe, req->fd, req->buf + req->done,
                       req->len - req->done, MSG_NOSIGNAL);
    break;
  case HB_OP_RECV:
    io_uring_prep_recv(sqe, req->fd, req->buf, req->len, 0);
    break;
  case HB_OP_TIMEOUT:
    req->ts.tv_sec = (long long) (req->timeout_ns / 1000000000u);
    req->ts.tv_nsec = (long long) (req->timeout_ns % 1000000000u);
    io_uring_prep_timeout(sqe, &req->ts, 0, 0);
    break;
  case HB_OP_CALL:
    break;              /* never reaches the ring */
  }
  io_uring_sqe_set_data(sqe, req);
}

static void arm_kick(struct hb_loop *l, struct uring_state *s)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

  /* The ring has depth + 1 entries and at most depth requests are in it,
   * so the only way to find it full is unsubmitted entries: submit them. */
  while (!sqe) {
    io_uring_submit(&s->ring);
    sqe = io_uring_get_sqe(&s->ring);
  }
  io_uring_prep_read(sqe, l->queue.efd, &s->kick_value, sizeof s->kick_value, 0);
  io_uring_sqe_set_data(sqe, &kick_token);
}

/* Move pending requests into the ring while there is room. */
static void fill_ring(struct hb_loop *l, struct uring_state *s)
{
  while (s->pending.head && s->in_flight < l->depth) {
    struct io_uring_sqe *sqe;

    if (hb_req_of(s->pending.head)->op == HB_OP_CALL) {
      struct hb_req *req = hb_req_of(hb_qlist_pop(&s->pending));
      req->res = 0;
      req->complete(req);   /* may queue more: the loop picks it up */
      continue;
    }
    sqe = io_uring_get_sqe(&s->ring);
    if (!sqe)
      break;
    prep(sqe, hb_req_of(hb_qlist_pop(&s->pending)));
    s->in_flight++;
  }
}

static void uring_run(struct hb_loop *l)
{
  struct uring_state *s = l->priv;

  arm_kick(l, s);
  for (;;) {
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int r;

    fill_ring(l, s);
    /* Stopping: what was queued before hb_loop_stop still runs, and the
     * loop never sleeps with nothing in flight (the kick is not re-armed
     * once stopping is seen, so nothing would wake it). */
    if (__atomic_load_n(&l->stopping, __ATOMIC_ACQUIRE) && !s->in_flight) {
      struct hb_qnode *last = hb_queue_take(&l->queue);
      if (!last && !s->pending.head)
        break;
      hb_qlist_splice(&s->pending, last);
      continue;
    }
    r = io_uring_submit_and_wait(&s->ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      hb_error("io_uring_submit_and_wait: %s", strerror(-r));
      continue;
    }
    io_uring_for_each_cqe(&s->ring, head, cqe) {
      void *data = io_uring_cqe_get_data(cqe);
      seen++;
      if (data == &kick_token) {
        hb_qlist_splice(&s->pending, hb_queue_take(&l->queue));
        if (!__atomic_load_n(&l->stopping, __ATOMIC_ACQUIRE))
          arm_kick(l, s);
        continue;
      }
      struct hb_req *req = data;
      s->in_flight--;
      if (hb_req_progress(req, cqe->res))
        req->complete(req);
      else
        hb_qlist_push_front(&s->pending, &req->qn);   /* the rest, first */
    }
    io_uring_cq_advance(&s->ring, seen);
  }
}

static void uring_push_local(struct hb_loop *l, struct hb_req *req)
{
  struct uring_state *s = l->priv;
  req->qn.next = NULL;
  hb_qlist_splice(&s->pending, &req->qn);
}

const struct hb_loop_ops hb_loop_uring_ops = {
  .name = "uring",
  .probe = uring_probe,
  .init = uring_init,
  .run = uring_run,
  .fini = uring_fini,
  .push_local = uring_push_local,
  .ops_mask = 1u << HB_OP_READ | 1u << HB_OP_WRITE | 1u << HB_OP_FDATASYNC |
              1u << HB_OP_FALLOCATE | 1u << HB_OP_SEND | 1u << HB_OP_RECV |
              1u << HB_OP_TIMEOUT | 1u << HB_OP_CALL,
};

#endif
