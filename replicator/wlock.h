/* The lock that page-cache writes to one file take with
 * -D hablock.write_lock=1 (dev.c; an experiment, off by default: see
 * docs/architecture.md for when it wins and when it loses): a mutex that a
 * running thread may take at once when it is free, even ahead of threads
 * asleep waiting for it, as long as none of those has waited long. Taking
 * a free lock at once keeps it busy while a sleeper wakes up (tens of
 * microseconds on this VM), which is where the throughput comes from; but
 * with that alone a sleeper can lose to newcomers for hundreds of
 * milliseconds (measured: 200 ms worst case at 4k QD32 with glibc's
 * mutex). So, like Go's sync.Mutex, once the oldest waiter has waited
 * starve_ns the lock goes into hand-off mode: an unlock passes it straight
 * to the oldest waiter and newcomers queue behind, until the queue is
 * empty or its head has not waited long. Waiters sleep on their own futex;
 * an unlock wakes at most one. */
#ifndef HB_WLOCK_H
#define HB_WLOCK_H

#include <pthread.h>
#include <stdint.h>

struct hb_wlock_waiter;

struct hb_wlock {
  int locked;                     /* 1 while held */
  int handoff;                    /* 1: unlocks hand it to the oldest waiter */
  pthread_mutex_t qlock;          /* guards the queue (held for a few loads) */
  struct hb_wlock_waiter *head;   /* waiters, oldest first */
  struct hb_wlock_waiter **tail;
  uint64_t starve_ns;             /* a wait this long turns hand-off on */
  unsigned long handoffs;         /* counted, for tests */
};

void hb_wlock_init(struct hb_wlock *l);
void hb_wlock_destroy(struct hb_wlock *l);
void hb_wlock_lock(struct hb_wlock *l);
void hb_wlock_unlock(struct hb_wlock *l);

#endif
