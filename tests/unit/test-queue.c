/* The loop's request queue: order, the eventfd wake-up, many producers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>
#include <cmocka.h>

#include "queue.h"

struct item {
  struct hb_qnode qn;
  int producer, seq;
};

static int efd_ready(int fd)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };
  return poll(&p, 1, 0);
}

static void test_order_and_wakeup(void **state)
{
  struct hb_queue q;
  struct item it[3];

  assert_int_equal(hb_queue_init(&q), 0);
  assert_null(hb_queue_take(&q));
  assert_int_equal(efd_ready(q.efd), 0);
  for (int i = 0; i < 3; i++) {
    it[i].seq = i;
    assert_int_equal(hb_queue_push(&q, &it[i].qn), 0);
  }
  assert_int_equal(efd_ready(q.efd), 1);   /* woken by the first push */
  hb_queue_ack(&q);
  assert_int_equal(efd_ready(q.efd), 0);   /* one wake-up for three pushes */
  struct hb_qnode *n = hb_queue_take(&q);
  for (int i = 0; i < 3; i++, n = n->next)
    assert_int_equal(((struct item *) n)->seq, i);
  assert_null(n);
  assert_null(hb_queue_take(&q));
  /* empty again: the next push wakes again */
  assert_int_equal(hb_queue_push(&q, &it[0].qn), 0);
  assert_int_equal(efd_ready(q.efd), 1);
  hb_queue_destroy(&q);
}

#define PRODUCERS 4
#define PER 20000

static struct hb_queue mq;
static struct item items[PRODUCERS][PER];

static void *producer(void *arg)
{
  int p = (int) (intptr_t) arg;
  for (int i = 0; i < PER; i++) {
    items[p][i].producer = p;
    items[p][i].seq = i;
    if (hb_queue_push(&mq, &items[p][i].qn) != 0)
      return (void *) 1;
  }
  return NULL;
}

static void test_many_producers(void **state)
{
  pthread_t th[PRODUCERS];
  int next[PRODUCERS] = { 0 };
  int total = 0;

  assert_int_equal(hb_queue_init(&mq), 0);
  for (int p = 0; p < PRODUCERS; p++)
    assert_int_equal(pthread_create(&th[p], NULL, producer, (void *) (intptr_t) p), 0);
  /* The consumer sleeps on the eventfd as the loop does; every push must be
   * seen without a lost wake-up (poll would block forever). */
  while (total < PRODUCERS * PER) {
    struct pollfd pf = { .fd = mq.efd, .events = POLLIN };
    assert_int_equal(poll(&pf, 1, 10000), 1);
    hb_queue_ack(&mq);
    for (struct hb_qnode *n = hb_queue_take(&mq); n; n = n->next) {
      struct item *it = (struct item *) n;
      assert_int_equal(it->seq, next[it->producer]);  /* per-producer order */
      next[it->producer]++;
      total++;
    }
  }
  for (int p = 0; p < PRODUCERS; p++) {
    void *ret;
    pthread_join(th[p], &ret);
    assert_null(ret);
  }
  assert_null(hb_queue_take(&mq));
  hb_queue_destroy(&mq);
}

static void test_qlist(void **state)
{
  struct hb_qlist l;
  struct item it[4];
  for (int i = 0; i < 4; i++) {
    it[i].seq = i;
    it[i].qn.next = NULL;
  }
  hb_qlist_init(&l);
  assert_null(hb_qlist_pop(&l));
  hb_qlist_splice(&l, NULL);
  it[1].qn.next = &it[2].qn;            /* a chain of two */
  hb_qlist_splice(&l, &it[1].qn);
  hb_qlist_push_front(&l, &it[0].qn);   /* resubmitted: goes first */
  hb_qlist_splice(&l, &it[3].qn);       /* the tail moved past the chain */
  for (int i = 0; i < 4; i++)
    assert_int_equal(((struct item *) hb_qlist_pop(&l))->seq, i);
  assert_null(hb_qlist_pop(&l));
  hb_qlist_push_front(&l, &it[2].qn);   /* into an empty list: tail too */
  it[3].qn.next = NULL;
  hb_qlist_splice(&l, &it[3].qn);
  assert_int_equal(((struct item *) hb_qlist_pop(&l))->seq, 2);
  assert_int_equal(((struct item *) hb_qlist_pop(&l))->seq, 3);
  assert_null(hb_qlist_pop(&l));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_qlist),
    cmocka_unit_test(test_order_and_wakeup),
    cmocka_unit_test(test_many_producers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
