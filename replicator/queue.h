/* A multi-producer, single-consumer queue of intrusive nodes with an eventfd
 * that wakes the consumer (the loop thread). Producers write the eventfd only
 * when the queue goes from empty to non-empty; the consumer takes the whole
 * list at once, so one wake-up serves every request queued meanwhile. */
#ifndef HB_QUEUE_H
#define HB_QUEUE_H

#include <pthread.h>
#include <stdbool.h>

struct hb_qnode {
  struct hb_qnode *next;
};

/* A singly linked list with O(1) append, for one thread's own use (the
 * loop's pending requests). */
struct hb_qlist {
  struct hb_qnode *head;
  struct hb_qnode **tail;
};

static inline void hb_qlist_init(struct hb_qlist *l)
{
  l->head = NULL;
  l->tail = &l->head;
}

/* Append a NULL-terminated chain. */
static inline void hb_qlist_splice(struct hb_qlist *l, struct hb_qnode *chain)
{
  if (!chain)
    return;
  *l->tail = chain;
  while (chain->next)
    chain = chain->next;
  l->tail = &chain->next;
}

static inline void hb_qlist_push_front(struct hb_qlist *l, struct hb_qnode *n)
{
  n->next = l->head;
  l->head = n;
  if (!n->next)
    l->tail = &n->next;
}

static inline struct hb_qnode *hb_qlist_pop(struct hb_qlist *l)
{
  struct hb_qnode *n = l->head;
  if (n) {
    l->head = n->next;
    if (!l->head)
      l->tail = &l->head;
  }
  return n;
}

struct hb_queue {
  pthread_mutex_t lock;
  struct hb_qlist list;
  int efd;              /* eventfd, non-blocking, semaphore off */
};

int hb_queue_init(struct hb_queue *q);
void hb_queue_destroy(struct hb_queue *q);
/* Append and wake the consumer. Returns 0: the node is queued, and the
 * consumer's from then on. */
int hb_queue_push(struct hb_queue *q, struct hb_qnode *n);
/* Take everything queued, in push order (NULL if empty). */
struct hb_qnode *hb_queue_take(struct hb_queue *q);
/* Consume the eventfd's counter after a wake-up (non-blocking). */
void hb_queue_ack(struct hb_queue *q);

#endif
