/* The write path's conflict check: overlapping ranges (at block granularity)
 * wait for each other, disjoint ones do not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>
#include <cmocka.h>

#include "inflight.h"

static struct hb_inflight t;

struct waiter {
  uint64_t off, len;
  struct hb_range r;
  int entered;
};

static void *begin_thread(void *arg)
{
  struct waiter *w = arg;
  hb_inflight_begin(&t, &w->r, w->off, w->len);
  __atomic_store_n(&w->entered, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static unsigned waiters_now(void)
{
  pthread_mutex_lock(&t.lock);
  unsigned n = t.waiters;
  pthread_mutex_unlock(&t.lock);
  return n;
}

/* Wait with a deadline until n threads are blocked in hb_inflight_begin. */
static void wait_for_waiters(unsigned n)
{
  struct timespec start, now, nap = { 0, 1000000 };
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (waiters_now() != n) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec > 10)
      fail_msg("expected %u blocked writers, have %u", n, waiters_now());
    nanosleep(&nap, NULL);
  }
}

static void test_overlap_waits(void **state)
{
  struct hb_range a, b;
  struct waiter w = { .off = 4100, .len = 10 };   /* same 4k block as a */
  pthread_t th;

  hb_inflight_init(&t, 4096);
  hb_inflight_begin(&t, &a, 4096, 1);
  hb_inflight_begin(&t, &b, 8192, 4096);          /* disjoint: no wait */
  assert_int_equal(t.conflicts, 0);
  assert_int_equal(pthread_create(&th, NULL, begin_thread, &w), 0);
  wait_for_waiters(1);
  assert_int_equal(__atomic_load_n(&w.entered, __ATOMIC_SEQ_CST), 0);
  hb_inflight_end(&t, &b);                         /* not the one it waits for */
  assert_int_equal(__atomic_load_n(&w.entered, __ATOMIC_SEQ_CST), 0);
  hb_inflight_end(&t, &a);
  pthread_join(th, NULL);
  assert_int_equal(w.entered, 1);
  assert_int_equal(t.conflicts, 1);
  hb_inflight_end(&t, &w.r);
  assert_null(t.head);
  hb_inflight_destroy(&t);
}

static void test_byte_granularity(void **state)
{
  struct hb_range a, b, c;

  hb_inflight_init(&t, 1);
  hb_inflight_begin(&t, &a, 0, 100);
  hb_inflight_begin(&t, &b, 100, 100);   /* adjacent: no conflict */
  hb_inflight_begin(&t, &c, 4096, 0);    /* zero length still registers */
  assert_int_equal(t.conflicts, 0);
  hb_inflight_end(&t, &b);
  hb_inflight_end(&t, &a);
  hb_inflight_end(&t, &c);
  assert_null(t.head);
  hb_inflight_destroy(&t);
}

static void test_chain(void **state)
{
  /* three writers queue behind one: all get through once it ends */
  struct hb_range a;
  struct waiter w[3] = { { .off = 0, .len = 4096 }, { .off = 1000, .len = 10 },
                         { .off = 1020, .len = 5000 } };
  pthread_t th[3];

  hb_inflight_init(&t, 512);
  hb_inflight_begin(&t, &a, 0, 8192);
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_create(&th[i], NULL, begin_thread, &w[i]), 0);
  wait_for_waiters(3);
  hb_inflight_end(&t, &a);
  /* They overlap each other too: each enters only after the previous ends. */
  for (int done = 0; done < 3; done++) {
    int in = -1;
    struct timespec nap = { 0, 1000000 };
    for (int tries = 0; in < 0 && tries < 10000; tries++) {
      for (int i = 0; i < 3; i++)
        if (__atomic_load_n(&w[i].entered, __ATOMIC_SEQ_CST) == 1)
          in = i;
      if (in < 0)
        nanosleep(&nap, NULL);
    }
    assert_true(in >= 0);
    int inside = 0;
    for (int i = 0; i < 3; i++)
      inside += __atomic_load_n(&w[i].entered, __ATOMIC_SEQ_CST) == 1;
    assert_int_equal(inside, 1);          /* never two overlapping at once */
    w[in].entered = 2;
    hb_inflight_end(&t, &w[in].r);
  }
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  assert_null(t.head);
  hb_inflight_destroy(&t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_overlap_waits),
    cmocka_unit_test(test_byte_granularity),
    cmocka_unit_test(test_chain),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
