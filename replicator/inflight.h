/* The conflict check on the write path: a write, trim or zero registers its
 * byte range (rounded out to the device's alignment, so that two requests
 * that share a block conflict) and waits while an overlapping request is in
 * flight. Overlapping requests are therefore never in flight together: each
 * completes before the next one that overlaps it starts, which the
 * replication issue relies on to apply them in the same order on both nodes,
 * and read-modify-write of a partial block never races another write of that
 * block. No lock is held across I/O. */
#ifndef HB_INFLIGHT_H
#define HB_INFLIGHT_H

#include <pthread.h>
#include <stdint.h>

struct hb_range {
  uint64_t start, end;          /* [start, end) */
  struct hb_range *prev, *next;
};

struct hb_inflight {
  pthread_mutex_t lock;
  pthread_cond_t done;
  struct hb_range *head;
  uint32_t align;               /* power of two */
  unsigned waiters;
  uint64_t conflicts;           /* how often a request had to wait */
};

void hb_inflight_init(struct hb_inflight *t, uint32_t align);
void hb_inflight_destroy(struct hb_inflight *t);
/* Wait until no in-flight range overlaps [off, off+len), then register r. */
void hb_inflight_begin(struct hb_inflight *t, struct hb_range *r,
                       uint64_t off, uint64_t len);
void hb_inflight_end(struct hb_inflight *t, struct hb_range *r);

#endif
