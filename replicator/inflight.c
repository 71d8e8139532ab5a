#include "inflight.h"

void hb_inflight_init(struct hb_inflight *t, uint32_t align)
{
  pthread_mutex_init(&t->lock, NULL);
  pthread_cond_init(&t->done, NULL);
  t->head = NULL;
  t->align = align ? align : 1;
  t->waiters = 0;
  t->conflicts = 0;
}

void hb_inflight_destroy(struct hb_inflight *t)
{
  pthread_cond_destroy(&t->done);
  pthread_mutex_destroy(&t->lock);
}

static const struct hb_range *overlapping(const struct hb_inflight *t,
                                          const struct hb_range *r)
{
  for (const struct hb_range *i = t->head; i; i = i->next)
    if (i->start < r->end && r->start < i->end)
      return i;
  return NULL;
}

void hb_inflight_begin(struct hb_inflight *t, struct hb_range *r,
                       uint64_t off, uint64_t len)
{
  uint64_t mask = (uint64_t) t->align - 1;

  r->start = off & ~mask;
  /* Callers have bounds-checked off+len against the device size, so the
   * rounded end cannot overflow. */
  r->end = (off + len + mask) & ~mask;
  if (r->end == r->start)
    r->end = r->start + 1;      /* a zero-length flush-like op still orders */
  r->prev = NULL;

  pthread_mutex_lock(&t->lock);
  if (overlapping(t, r)) {
    t->conflicts++;
    t->waiters++;
    while (overlapping(t, r))
      pthread_cond_wait(&t->done, &t->lock);
    t->waiters--;
  }
  r->next = t->head;
  if (t->head)
    t->head->prev = r;
  t->head = r;
  pthread_mutex_unlock(&t->lock);
}

void hb_inflight_end(struct hb_inflight *t, struct hb_range *r)
{
  pthread_mutex_lock(&t->lock);
  if (r->prev)
    r->prev->next = r->next;
  else
    t->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  if (t->waiters)
    pthread_cond_broadcast(&t->done);
  pthread_mutex_unlock(&t->lock);
}
