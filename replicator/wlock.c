/* A mutex with newcomers first and a bound on starvation (wlock.h). */
#include <linux/futex.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loop.h"
#include "wlock.h"

/* A waiter older than this turns hand-off on (Go uses 1 ms too). */
#define STARVE_NS_DEFAULT 1000000u

enum { W_WAIT, W_RETRY, W_GRANTED };

struct hb_wlock_waiter {
  struct hb_wlock_waiter *next;
  int state;                      /* futex word */
  uint64_t since_ns;
};

void hb_wlock_init(struct hb_wlock *l)
{
  l->locked = 0;
  l->handoff = 0;
  pthread_mutex_init(&l->qlock, NULL);
  l->head = NULL;
  l->tail = &l->head;
  l->starve_ns = STARVE_NS_DEFAULT;
  l->handoffs = 0;
}

void hb_wlock_destroy(struct hb_wlock *l)
{
  pthread_mutex_destroy(&l->qlock);
}

static bool try_take(struct hb_wlock *l)
{
  int free_ = 0;

  return __atomic_load_n(&l->locked, __ATOMIC_RELAXED) == 0 &&
         __atomic_compare_exchange_n(&l->locked, &free_, 1, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

/* Called with qlock held. */
static void unlink_waiter(struct hb_wlock *l, struct hb_wlock_waiter *w)
{
  struct hb_wlock_waiter **pp = &l->head;

  while (*pp && *pp != w)
    pp = &(*pp)->next;
  if (!*pp)
    return;
  *pp = w->next;
  if (l->tail == &w->next)
    l->tail = pp;
}

void hb_wlock_lock(struct hb_wlock *l)
{
  struct hb_wlock_waiter me;

  if (!__atomic_load_n(&l->handoff, __ATOMIC_RELAXED) && try_take(l))
    return;
  me.next = NULL;
  me.state = W_WAIT;
  me.since_ns = hb_now_ns();
  pthread_mutex_lock(&l->qlock);
  *l->tail = &me;
  l->tail = &me.next;
  pthread_mutex_unlock(&l->qlock);

  for (;;) {
    int st = __atomic_load_n(&me.state, __ATOMIC_ACQUIRE);

    if (st == W_GRANTED)
      return;                       /* the unlocker took us off the queue */
    if (st == W_RETRY &&
        !__atomic_compare_exchange_n(&me.state, &st, W_WAIT, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
      continue;                     /* granted meanwhile */
    /* A queued waiter takes a free lock whatever the mode: in hand-off
     * mode the lock is never free while someone is queued, except in the
     * moment a waiter turns the mode on, and then somebody must take it. */
    if (try_take(l)) {
      pthread_mutex_lock(&l->qlock);
      unlink_waiter(l, &me);
      pthread_mutex_unlock(&l->qlock);
      return;
    }
    if (hb_now_ns() - me.since_ns >= l->starve_ns)
      __atomic_store_n(&l->handoff, 1, __ATOMIC_SEQ_CST);
    /* Sleep unless an unlock since our try marked us (RETRY or GRANTED):
     * the unlock releases before it marks, so one of us sees the other. */
    syscall(SYS_futex, &me.state, FUTEX_WAIT_PRIVATE, W_WAIT, NULL, NULL, 0);
  }
}

void hb_wlock_unlock(struct hb_wlock *l)
{
  struct hb_wlock_waiter *w;

  pthread_mutex_lock(&l->qlock);
  w = l->head;
  if (w && __atomic_load_n(&l->handoff, __ATOMIC_SEQ_CST)) {
    /* Hand-off: the lock stays held and becomes w's. */
    l->head = w->next;
    if (!l->head)
      l->tail = &l->head;
    if (!l->head || hb_now_ns() - w->since_ns < l->starve_ns)
      __atomic_store_n(&l->handoff, 0, __ATOMIC_SEQ_CST);
    l->handoffs++;
    __atomic_store_n(&w->state, W_GRANTED, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&l->qlock);
    /* w may see its mark and return before this: the wake-up then goes to
     * a stale address, at worst a spurious wake-up there, which every
     * futex waiter expects. The same below. */
    syscall(SYS_futex, &w->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    return;
  }
  if (!w)
    __atomic_store_n(&l->handoff, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&l->locked, 0, __ATOMIC_SEQ_CST);
  if (w)
    __atomic_store_n(&w->state, W_RETRY, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&l->qlock);
  if (w)
    syscall(SYS_futex, &w->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}
