#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hb-build.h"
#include "log.h"
#include "loop.h"

static const struct hb_loop_ops *loop_ops(enum hb_loop_kind kind)
{
#if HAVE_LIBURING
  if (kind == HB_LOOP_URING)
    return &hb_loop_uring_ops;
#endif
#if HAVE_LIBAIO
  if (kind == HB_LOOP_AIO)
    return &hb_loop_aio_ops;
#endif
  return NULL;
}

bool hb_req_progress(struct hb_req *req, long res)
{
  if (req->op == HB_OP_TIMEOUT && res == -ETIME)
    res = 0;                            /* a timeout that fired is success */
  if (res == -EAGAIN || res == -EINTR)
    return false;
  if (res < 0) {
    req->res = (int) res;
    return true;
  }
  if (req->op == HB_OP_RECV) {          /* any amount, 0 is end of file */
    req->res = (int) res;
    return true;
  }
  if (req->op != HB_OP_READ && req->op != HB_OP_WRITE && req->op != HB_OP_SEND) {
    req->res = 0;
    return true;
  }
  if (res == 0) {                /* EOF or no progress: never spin */
    req->res = -EIO;
    return true;
  }
  req->done += (uint64_t) res;
  if (req->done >= req->len) {
    req->res = 0;
    return true;
  }
  return false;
}

int hb_loop_probe(enum hb_loop_kind kind, unsigned depth, char *err, size_t errlen)
{
  const struct hb_loop_ops *ops = loop_ops(kind);

  if (!ops)
    return hb_fail(err, errlen, ENOTSUP, "%s backend not compiled in",
                   kind == HB_LOOP_URING ? "io_uring" : "libaio");
  return ops->probe(depth, err, errlen);
}

static void *loop_main(void *arg)
{
  struct hb_loop *l = arg;
  l->ops->run(l);
  return NULL;
}

struct loop_thread {
  struct hb_loop loop;
  pthread_t thread;
};

int hb_loop_start(enum hb_loop_kind kind, unsigned depth, struct hb_loop **out,
                  char *err, size_t errlen)
{
  const struct hb_loop_ops *ops = loop_ops(kind);
  struct loop_thread *lt;
  int r;

  if (!ops)
    return hb_loop_probe(kind, depth, err, errlen);
  lt = calloc(1, sizeof *lt);
  if (!lt)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  lt->loop.ops = ops;
  lt->loop.depth = depth;
  r = hb_queue_init(&lt->loop.queue);
  if (r < 0) {
    free(lt);
    return hb_fail(err, errlen, -r, "eventfd: %s", strerror(-r));
  }
  r = ops->init(&lt->loop, err, errlen);
  if (r < 0) {
    hb_queue_destroy(&lt->loop.queue);
    free(lt);
    return r;
  }
  r = pthread_create(&lt->thread, NULL, loop_main, &lt->loop);
  if (r) {
    ops->fini(&lt->loop);
    hb_queue_destroy(&lt->loop.queue);
    free(lt);
    return hb_fail(err, errlen, r, "cannot start the loop thread: %s", strerror(r));
  }
  *out = &lt->loop;
  return 0;
}

void hb_loop_stop(struct hb_loop *l)
{
  struct loop_thread *lt = (struct loop_thread *) l;
  uint64_t one = 1;

  if (!l)
    return;
  __atomic_store_n(&l->stopping, true, __ATOMIC_RELEASE);
  if (write(l->queue.efd, &one, sizeof one) < 0)
    hb_error("cannot wake the loop thread: %m");
  pthread_join(lt->thread, NULL);
  l->ops->fini(l);
  hb_queue_destroy(&l->queue);
  free(lt);
}

bool hb_loop_can(const struct hb_loop *l, enum hb_op op)
{
  return (l->ops->ops_mask & ~l->ops_missing) & (1u << op);
}

int hb_loop_submit(struct hb_loop *l, struct hb_req *req)
{
  req->done = 0;
  req->res = 0;
  return hb_queue_push(&l->queue, &req->qn);
}

void hb_loop_submit_local(struct hb_loop *l, struct hb_req *req)
{
  req->done = 0;
  req->res = 0;
  l->ops->push_local(l, req);
}

static void post_waiter(struct hb_req *req)
{
  sem_post(req->opaque);
}

int hb_loop_run(struct hb_loop *l, struct hb_req *req)
{
  sem_t sem;
  int r;

  sem_init(&sem, 0, 0);
  req->complete = post_waiter;
  req->opaque = &sem;
  r = hb_loop_submit(l, req);
  if (r == 0) {
    while (sem_wait(&sem) < 0 && errno == EINTR)
      ;
    r = req->res;
  }
  sem_destroy(&sem);
  return r;
}
