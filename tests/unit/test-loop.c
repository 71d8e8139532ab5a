/* The loop thread's request lifecycle under both engines: many requests in
 * flight at once, completions on the loop thread, short transfers resumed,
 * errors reported, clean stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "hb-build.h"
#include "loop.h"

/* hb_req_progress: the one place that decides done / resubmit / failed. */
static void test_progress_table(void **state)
{
  struct {
    enum hb_op op;
    uint64_t len, done;
    long res;
    bool finished;
    int want_res;
    uint64_t want_done;
  } rows[] = {
    { HB_OP_WRITE, 8192, 0, 8192, true, 0, 8192 },
    { HB_OP_WRITE, 8192, 0, 4096, false, 0, 4096 },      /* short: resubmit */
    { HB_OP_WRITE, 8192, 4096, 4096, true, 0, 8192 },    /* the rest */
    { HB_OP_READ, 8192, 0, -EAGAIN, false, 0, 0 },
    { HB_OP_READ, 8192, 0, -EINTR, false, 0, 0 },
    { HB_OP_READ, 8192, 0, -EIO, true, -EIO, 0 },
    { HB_OP_READ, 8192, 0, 0, true, -EIO, 0 },            /* EOF: never spin */
    { HB_OP_FDATASYNC, 0, 0, 0, true, 0, 0 },
    { HB_OP_FALLOCATE, 4096, 0, -EOPNOTSUPP, true, -EOPNOTSUPP, 0 },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    struct hb_req r = { .op = rows[i].op, .len = rows[i].len, .done = rows[i].done, .res = 1 };
    assert_int_equal(hb_req_progress(&r, rows[i].res), rows[i].finished);
    if (rows[i].finished)
      assert_int_equal(r.res, rows[i].want_res);
    assert_int_equal(r.done, rows[i].want_done);
  }
}

#define NREQ 64
#define BS 4096

struct batch {
  sem_t all_done;
  int remaining;
};

static void count_done(struct hb_req *req)
{
  struct batch *b = req->opaque;
  if (__atomic_sub_fetch(&b->remaining, 1, __ATOMIC_SEQ_CST) == 0)
    sem_post(&b->all_done);
}

static void run_batch(struct hb_loop *l, struct hb_req *reqs, int n)
{
  struct batch b = { .remaining = n };
  sem_init(&b.all_done, 0, 0);
  for (int i = 0; i < n; i++) {
    reqs[i].complete = count_done;
    reqs[i].opaque = &b;
    assert_int_equal(hb_loop_submit(l, &reqs[i]), 0);
  }
  sem_wait(&b.all_done);
  sem_destroy(&b.all_done);
}

static void exercise(enum hb_loop_kind kind, unsigned depth)
{
  char path[] = "/var/tmp/hablock-test-loop.XXXXXX";
  char err[256];
  struct hb_loop *l;
  struct hb_req reqs[NREQ];
  char *buf = NULL, *back = NULL;
  int fd = mkstemp(path);

  assert_true(fd >= 0);
  unlink(path);
  close(fd);
  fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
  if (fd < 0)
    fd = mkstemp(path);        /* no O_DIRECT here: page cache will do */
  assert_true(fd >= 0);
  unlink(path);
  assert_int_equal(ftruncate(fd, NREQ * BS), 0);
  assert_int_equal(posix_memalign((void **) &buf, 4096, NREQ * BS), 0);
  assert_int_equal(posix_memalign((void **) &back, 4096, NREQ * BS), 0);
  for (int i = 0; i < NREQ * BS; i++)
    buf[i] = (char) (i * 7 + 3);

  if (hb_loop_start(kind, depth, &l, err, sizeof err) < 0)
    fail_msg("cannot start the loop: %s", err);

  /* 64 writes at once through a ring of `depth`: some wait in the loop's
   * pending list for room. */
  for (int i = 0; i < NREQ; i++)
    reqs[i] = (struct hb_req) { .op = HB_OP_WRITE, .fd = fd, .buf = buf + i * BS,
                                .off = (uint64_t) i * BS, .len = BS };
  run_batch(l, reqs, NREQ);
  for (int i = 0; i < NREQ; i++)
    assert_int_equal(reqs[i].res, 0);

  struct hb_req flush = { .op = HB_OP_FDATASYNC, .fd = fd };
  if (hb_loop_can(l, HB_OP_FDATASYNC))
    assert_int_equal(hb_loop_run(l, &flush), 0);

  for (int i = 0; i < NREQ; i++)
    reqs[i] = (struct hb_req) { .op = HB_OP_READ, .fd = fd, .buf = back + i * BS,
                                .off = (uint64_t) i * BS, .len = BS };
  run_batch(l, reqs, NREQ);
  for (int i = 0; i < NREQ; i++)
    assert_int_equal(reqs[i].res, 0);
  assert_memory_equal(buf, back, NREQ * BS);

  /* A read past the end of the file: EOF is an error, not a spin. */
  struct hb_req eof = { .op = HB_OP_READ, .fd = fd, .buf = back, .off = NREQ * BS, .len = BS };
  assert_int_equal(hb_loop_run(l, &eof), -EIO);

  /* An error from the kernel reaches the caller. */
  struct hb_req bad = { .op = HB_OP_WRITE, .fd = 9999, .buf = buf, .off = 0, .len = BS };
  assert_int_equal(hb_loop_run(l, &bad), -EBADF);

  if (hb_loop_can(l, HB_OP_FALLOCATE)) {
    struct hb_req punch = { .op = HB_OP_FALLOCATE, .fd = fd,
                            .mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            .off = 0, .len = BS };
    assert_int_equal(hb_loop_run(l, &punch), 0);
    struct hb_req rd = { .op = HB_OP_READ, .fd = fd, .buf = back, .off = 0, .len = BS };
    assert_int_equal(hb_loop_run(l, &rd), 0);
    for (int i = 0; i < BS; i++)
      assert_int_equal(back[i], 0);
  }

  hb_loop_stop(l);
  free(buf);
  free(back);
  close(fd);
}

static void test_uring(void **state)
{
#if HAVE_LIBURING
  char err[256];
  if (hb_loop_probe(HB_LOOP_URING, 8, err, sizeof err) < 0)
    skip();
  exercise(HB_LOOP_URING, 8);
  exercise(HB_LOOP_URING, 128);
#else
  skip();
#endif
}

static void test_aio(void **state)
{
#if HAVE_LIBAIO
  exercise(HB_LOOP_AIO, 8);
  exercise(HB_LOOP_AIO, 128);
#else
  skip();
#endif
}

/* ---- sockets, timers and calls: what the peer link uses ---- */

struct done_log {
  sem_t sem;
  struct hb_req *order[8];
  unsigned n;
};

static void note_done(struct hb_req *req)
{
  struct done_log *d = req->opaque;
  d->order[d->n++] = req;       /* loop thread only */
  sem_post(&d->sem);
}

static uint64_t ms_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

/* Wait for one completion, 10 s at most: a lost one fails, never hangs. */
#define wait_done(d) wait_done_at(d, __LINE__)
static void wait_done_at(struct done_log *d, int line)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 10;
  if (sem_timedwait(&d->sem, &ts) != 0)
    fail_msg("no completion within 10 s (waiting at line %d)", line);
}

struct drain {
  int fd;
  unsigned char *buf;
  size_t len;
};

static void *drain_main(void *arg)
{
  struct drain *dr = arg;
  size_t got = 0;

  usleep(20000);                /* let the sender fill the socket first */
  while (got < dr->len) {
    ssize_t n = read(dr->fd, dr->buf + got, dr->len - got);
    if (n <= 0)
      break;
    got += (size_t) n;
  }
  dr->len = got;
  return NULL;
}

static void links(enum hb_loop_kind kind)
{
  char err[256];
  struct hb_loop *l;
  struct done_log d = { .n = 0 };
  struct hb_req rx, tx, t1, t2, call;
  int sv[2];
  char in[64];
  const size_t big = 4u << 20;
  unsigned char *out = malloc(big);
  struct drain dr = { .buf = malloc(big), .len = big };
  pthread_t th;
  uint64_t t0;

  assert_non_null(out);
  assert_non_null(dr.buf);
  sem_init(&d.sem, 0, 0);
  assert_int_equal(hb_loop_start(kind, 8, &l, err, sizeof err), 0);
  assert_true(hb_loop_can(l, HB_OP_SEND) && hb_loop_can(l, HB_OP_RECV) &&
              hb_loop_can(l, HB_OP_TIMEOUT) && hb_loop_can(l, HB_OP_CALL));
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

  /* A recv posted before anything arrives waits for it. */
  rx = (struct hb_req) { .op = HB_OP_RECV, .fd = sv[0], .buf = in, .len = sizeof in,
                         .complete = note_done, .opaque = &d };
  assert_int_equal(hb_loop_submit(l, &rx), 0);
  usleep(20000);
  assert_int_equal(d.n, 0);
  assert_int_equal(write(sv[1], "hello", 5), 5);
  wait_done(&d);
  assert_int_equal(rx.res, 5);
  assert_memory_equal(in, "hello", 5);

  /* A send larger than the socket takes: resumed until all is through. */
  for (size_t i = 0; i < big; i++)
    out[i] = (unsigned char) (i * 131 + 7);
  dr.fd = sv[1];
  assert_int_equal(pthread_create(&th, NULL, drain_main, &dr), 0);
  tx = (struct hb_req) { .op = HB_OP_SEND, .fd = sv[0], .buf = (char *) out, .len = big,
                         .complete = note_done, .opaque = &d };
  assert_int_equal(hb_loop_submit(l, &tx), 0);
  wait_done(&d);
  pthread_join(th, NULL);
  assert_int_equal(tx.res, 0);
  assert_int_equal(dr.len, big);
  assert_memory_equal(dr.buf, out, big);

  /* Timers: the shorter one first, neither early. */
  d.n = 0;
  t0 = ms_now();
  t1 = (struct hb_req) { .op = HB_OP_TIMEOUT, .timeout_ns = 80000000u,
                         .complete = note_done, .opaque = &d };
  t2 = (struct hb_req) { .op = HB_OP_TIMEOUT, .timeout_ns = 30000000u,
                         .complete = note_done, .opaque = &d };
  assert_int_equal(hb_loop_submit(l, &t1), 0);
  assert_int_equal(hb_loop_submit(l, &t2), 0);
  wait_done(&d);
  wait_done(&d);
  assert_ptr_equal(d.order[0], &t2);
  assert_ptr_equal(d.order[1], &t1);
  assert_int_equal(t1.res, 0);
  assert_true(ms_now() - t0 >= 80);

  /* A call runs on the loop; a recv sees the end of the stream as 0. */
  call = (struct hb_req) { .op = HB_OP_CALL, .complete = note_done, .opaque = &d };
  assert_int_equal(hb_loop_submit(l, &call), 0);
  wait_done(&d);
  rx = (struct hb_req) { .op = HB_OP_RECV, .fd = sv[0], .buf = in, .len = sizeof in,
                         .complete = note_done, .opaque = &d };
  assert_int_equal(hb_loop_submit(l, &rx), 0);
  close(sv[1]);
  wait_done(&d);
  assert_int_equal(rx.res, 0);

  /* Stopping with a timer armed waits for it, then returns. */
  t1 = (struct hb_req) { .op = HB_OP_TIMEOUT, .timeout_ns = 50000000u,
                         .complete = note_done, .opaque = &d };
  assert_int_equal(hb_loop_submit(l, &t1), 0);
  hb_loop_stop(l);
  wait_done(&d);
  close(sv[0]);
  sem_destroy(&d.sem);
  free(out);
  free(dr.buf);
}

static void test_links_uring(void **state)
{
#if HAVE_LIBURING
  char err[256];
  if (hb_loop_probe(HB_LOOP_URING, 8, err, sizeof err) < 0)
    skip();
  links(HB_LOOP_URING);
#else
  skip();
#endif
}

static void test_links_aio(void **state)
{
#if HAVE_LIBAIO
  links(HB_LOOP_AIO);
#else
  skip();
#endif
}

static void test_start_stop_idle(void **state)
{
  char err[256];
  struct hb_loop *l;
  for (int i = 0; i < 20; i++) {
    assert_int_equal(hb_loop_start(i % 2 && HAVE_LIBAIO ? HB_LOOP_AIO : HB_LOOP_URING,
                                   4, &l, err, sizeof err), 0);
    hb_loop_stop(l);
  }
}

/* A call queued just before the stop runs, and the stop returns (the
 * io_uring loop once slept for ever here: nothing in flight, no kick). */
static void test_call_then_stop(void **state)
{
  char err[256];
  struct hb_loop *l;

  for (int i = 0; i < 200; i++) {
    struct done_log d = { .n = 0 };
    struct hb_req call = { .op = HB_OP_CALL, .complete = note_done, .opaque = &d };
    sem_init(&d.sem, 0, 0);
    assert_int_equal(hb_loop_start(i % 2 && HAVE_LIBAIO ? HB_LOOP_AIO : HB_LOOP_URING,
                                   4, &l, err, sizeof err), 0);
    assert_int_equal(hb_loop_submit(l, &call), 0);
    hb_loop_stop(l);
    assert_int_equal(sem_trywait(&d.sem), 0);
    sem_destroy(&d.sem);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_progress_table),
    cmocka_unit_test(test_uring),
    cmocka_unit_test(test_aio),
    cmocka_unit_test(test_links_uring),
    cmocka_unit_test(test_links_aio),
    cmocka_unit_test(test_start_stop_idle),
    cmocka_unit_test(test_call_then_stop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
