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

struct hb_queue {
  pthread_mutex_t lock;
  struct hb_qnode *head;
  struct hb_qnode **tail;
  int efd;              /* eventfd, non-blocking, semaphore off */
};

int hb_queue_init(struct hb_queue *q);
void hb_queue_destroy(struct hb_queue *q);
/* Append; returns 0 or -errno (only if the eventfd write fails). */
int hb_queue_push(struct hb_queue *q, struct hb_qnode *n);
/* Take everything queued, in push order (NULL if empty). */
struct hb_qnode *hb_queue_take(struct hb_queue *q);
/* Consume the eventfd's counter after a wake-up (non-blocking). */
void hb_queue_ack(struct hb_queue *q);

#endif
