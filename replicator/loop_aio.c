/* The libaio loop: the fallback where io_uring is unavailable. One thread
 * owns an aio context; completions are signalled on a second eventfd, and the
 * thread sleeps in poll() on that and the queue's eventfd. Linux AIO is only
 * asynchronous for O_DIRECT reads and writes, so this loop carries READ and
 * WRITE; the device does flush, trim and zero with the worker's own
 * syscalls. For the peer link it also carries SEND and RECV (a non-blocking
 * send(2)/recv(2) first; when the socket is not ready, an aio POLL for it
 * and then the syscall again), TIMEOUT (the nearest deadline is poll()'s
 * timeout) and CALL. */
#include "hb-build.h"
#if HAVE_LIBAIO

#include <errno.h>
#include <libaio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

struct aio_state {
  io_context_t ctx;
  int done_efd;
  unsigned in_flight;            /* iocbs in the kernel */
  unsigned ntimers;             /* armed HB_OP_TIMEOUT requests */
  struct iocb *iocbs;           /* depth slots */
  struct iocb **free_slots;     /* stack of free slots */
  unsigned nfree;
  struct io_event *events;
  struct hb_qlist pending;      /* taken from the queue, not yet submitted */
  struct hb_qlist timers;       /* HB_OP_TIMEOUT requests, unordered */
};



static int aio_probe(unsigned depth, char *err, size_t errlen)
{
  io_context_t ctx = 0;
  int r = io_setup((int) depth, &ctx);

  if (r < 0)
    return hb_fail(err, errlen, -r, "io_setup: %s", strerror(-r));
  io_destroy(ctx);
  return 0;
}

/* IOCB_CMD_POLL came with Linux 4.18: try one on a readable eventfd. */
static bool poll_works(io_context_t ctx)
{
  struct iocb cb, *cbs[1] = { &cb };
  struct io_event ev;
  struct timespec ts = { 1, 0 };
  uint64_t one = 1;
  bool ok = false;
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

  if (fd < 0)
    return false;
  if (write(fd, &one, sizeof one) == (ssize_t) sizeof one) {
    io_prep_poll(&cb, fd, POLLIN);
    if (io_submit(ctx, 1, cbs) == 1)
      ok = io_getevents(ctx, 1, 1, &ev, &ts) == 1 && (long) ev.res >= 0;
  }
  close(fd);
  return ok;
}

static void aio_fini(struct hb_loop *l)
{
  struct aio_state *s = l->priv;

  if (s->ctx)
    io_destroy(s->ctx);
  if (s->done_efd >= 0)
    close(s->done_efd);
  free(s->iocbs);
  free(s->free_slots);
  free(s->events);
  free(s);
}

static int aio_init(struct hb_loop *l, char *err, size_t errlen)
{
  struct aio_state *s = calloc(1, sizeof *s);
  int r;

  if (!s)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  l->priv = s;
  s->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  s->iocbs = calloc(l->depth, sizeof *s->iocbs);
  s->free_slots = calloc(l->depth, sizeof *s->free_slots);
  s->events = calloc(l->depth, sizeof *s->events);
  if (s->done_efd < 0 || !s->iocbs || !s->free_slots || !s->events) {
    aio_fini(l);
    return hb_fail(err, errlen, ENOMEM, "cannot allocate the aio loop");
  }
  r = io_setup((int) l->depth, &s->ctx);
  if (r < 0) {
    s->ctx = 0;
    aio_fini(l);
    return hb_fail(err, errlen, -r, "io_setup: %s", strerror(-r));
  }
  if (!poll_works(s->ctx)) {
    hb_debug("aio: this kernel has no aio POLL: no socket I/O on this loop");
    l->ops_missing = 1u << HB_OP_SEND | 1u << HB_OP_RECV;
  }
  for (unsigned i = 0; i < l->depth; i++)
    s->free_slots[i] = &s->iocbs[i];
  s->nfree = l->depth;
  hb_qlist_init(&s->pending);
  hb_qlist_init(&s->timers);
  return 0;
}

static void finish(struct aio_state *s, struct hb_req *req, long res)
{
  if (hb_req_progress(req, res))
    req->complete(req);
  else
    hb_qlist_push_front(&s->pending, &req->qn);   /* the rest, first */
}

/* Submit up to one batch of pending requests in one io_submit; returns
 * whether the kernel took all of them. */
static bool submit_batch(struct aio_state *s)
{
  struct iocb *batch[64];
  int n = 0, r, err;

  while (s->pending.head && s->nfree && n < (int) (sizeof batch / sizeof batch[0])) {
    struct hb_req *req = hb_req_of(hb_qlist_pop(&s->pending));
    struct iocb *cb;

    if (req->op == HB_OP_CALL) {
      req->res = 0;
      req->complete(req);       /* may queue more: taken in this loop */
      continue;
    }
    if (req->op == HB_OP_TIMEOUT) {
      req->off = hb_now_ns() + req->timeout_ns;   /* its deadline */
      req->qn.next = NULL;
      hb_qlist_splice(&s->timers, &req->qn);
      s->ntimers++;
      continue;
    }
    if (req->op == HB_OP_SEND || req->op == HB_OP_RECV) {
      ssize_t got = req->op == HB_OP_SEND
        ? send(req->fd, req->buf + req->done, req->len - req->done,
               MSG_DONTWAIT | MSG_NOSIGNAL)
        : recv(req->fd, req->buf, req->len, MSG_DONTWAIT);
      if (got >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        finish(s, req, got >= 0 ? (long) got : -(long) errno);  /* EINTR: again */
        continue;
      }
      /* Not ready: an aio POLL for it; its completion retries the call. */
      cb = s->free_slots[--s->nfree];
      io_prep_poll(cb, req->fd, req->op == HB_OP_SEND ? POLLOUT : POLLIN);
      io_set_eventfd(cb, s->done_efd);
      cb->data = req;
      batch[n++] = cb;
      continue;
    }
    cb = s->free_slots[--s->nfree];
    if (req->op == HB_OP_READ) {
      io_prep_pread(cb, req->fd, req->buf + req->done, req->len - req->done,
                    (long long) (req->off + req->done));
    } else if (req->op == HB_OP_WRITE) {
      io_prep_pwrite(cb, req->fd, req->buf + req->done, req->len - req->done,
                     (long long) (req->off + req->done));
      cb->aio_rw_flags = (unsigned) req->rw_flags;
    } else {
      s->free_slots[s->nfree++] = cb;
      req->res = -EOPNOTSUPP;   /* the device never sends these here */
      req->complete(req);
      continue;
    }
    io_set_eventfd(cb, s->done_efd);
    cb->data = req;
    batch[n++] = cb;
  }
  if (n == 0)
    return false;
  r = io_submit(s->ctx, n, batch);
  err = r < 0 ? r : 0;
  if (r < 0)
    r = 0;
  s->in_flight += (unsigned) r;
  /* Put back what the kernel did not take, in order, ahead of the rest. */
  for (int i = n - 1; i >= r; i--) {
    s->free_slots[s->nfree++] = batch[i];
    hb_qlist_push_front(&s->pending, &((struct hb_req *) batch[i]->data)->qn);
  }
  if (err && (err != -EAGAIN || s->in_flight == 0)) {
    /* The first one not taken is the one that failed (or, with nothing in
     * flight to wait for, the kernel is out of aio resources). */
    struct hb_req *req = hb_req_of(hb_qlist_pop(&s->pending));
    req->res = err;
    req->complete(req);
  }
  return r == n;
}

static void reap(struct aio_state *s)
{
  struct timespec zero = { 0, 0 };
  int n;

  do {
    n = io_getevents(s->ctx, 0, (long) s->in_flight, s->events, &zero);
    for (int i = 0; i < n; i++) {
      struct iocb *cb = s->events[i].obj;
      struct hb_req *req = cb->data;
      long res = (long) s->events[i].res;

      s->free_slots[s->nfree++] = cb;
      s->in_flight--;
      if (cb->aio_lio_opcode == IO_CMD_POLL && res >= 0)
        hb_qlist_push_front(&s->pending, &req->qn);   /* ready: call again */
      else
        finish(s, req, res);
    }
  } while (n > 0);
}

/* Complete the timers whose deadline has passed (a completion may arm a
 * new one: it goes to pending). */
static void fire_timers(struct aio_state *s)
{
  struct hb_qnode *n = s->timers.head;
  struct hb_qlist due;
  uint64_t now = hb_now_ns();

  hb_qlist_init(&due);
  hb_qlist_init(&s->timers);
  while (n) {
    struct hb_qnode *next = n->next;
    n->next = NULL;
    hb_qlist_splice(hb_req_of(n)->off <= now ? &due : &s->timers, n);
    n = next;
  }
  while ((n = hb_qlist_pop(&due))) {
    struct hb_req *req = hb_req_of(n);
    s->ntimers--;
    req->res = 0;
    req->complete(req);
  }
}

/* poll()'s timeout: milliseconds to the nearest timer, -1 for none. */
static int next_timeout(const struct aio_state *s)
{
  uint64_t now = hb_now_ns(), next = UINT64_MAX;

  for (const struct hb_qnode *n = s->timers.head; n; n = n->next)
    if (hb_req_of((struct hb_qnode *) n)->off < next)
      next = hb_req_of((struct hb_qnode *) n)->off;
  if (next == UINT64_MAX)
    return -1;
  return next <= now ? 0 : (int) ((next - now + 999999u) / 1000000u);
}

static void aio_run(struct hb_loop *l)
{
  struct aio_state *s = l->priv;
  struct pollfd pfd[2] = {
    { .fd = l->queue.efd, .events = POLLIN },
    { .fd = s->done_efd, .events = POLLIN },
  };

  for (;;) {
    fire_timers(s);
    while (s->pending.head && s->nfree && submit_batch(s))
      ;
    /* Checked after the timers and the submissions, never before a sleep
     * that nothing would end; what was queued before hb_loop_stop runs. */
    if (__atomic_load_n(&l->stopping, __ATOMIC_ACQUIRE) && !s->in_flight && !s->ntimers) {
      struct hb_qnode *last = hb_queue_take(&l->queue);
      if (!last && !s->pending.head)
        break;
      hb_qlist_splice(&s->pending, last);
      continue;
    }
    if (poll(pfd, 2, next_timeout(s)) < 0) {
      if (errno != EINTR)
        hb_error("poll: %m");
      continue;
    }
    if (pfd[1].revents & POLLIN) {
      uint64_t v;
      if (read(s->done_efd, &v, sizeof v) < 0 && errno != EAGAIN)
        hb_error("aio eventfd: %m");
      reap(s);
    }
    if (pfd[0].revents & POLLIN) {
      hb_queue_ack(&l->queue);
      hb_qlist_splice(&s->pending, hb_queue_take(&l->queue));
    }
  }
}

static void aio_push_local(struct hb_loop *l, struct hb_req *req)
{
  struct aio_state *s = l->priv;
  req->qn.next = NULL;
  hb_qlist_splice(&s->pending, &req->qn);
}

const struct hb_loop_ops hb_loop_aio_ops = {
  .name = "aio",
  .probe = aio_probe,
  .init = aio_init,
  .run = aio_run,
  .fini = aio_fini,
  .push_local = aio_push_local,
  .ops_mask = 1u << HB_OP_READ | 1u << HB_OP_WRITE | 1u << HB_OP_SEND |
              1u << HB_OP_RECV | 1u << HB_OP_TIMEOUT | 1u << HB_OP_CALL,
};

#endif
