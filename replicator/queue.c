#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "queue.h"

int hb_queue_init(struct hb_queue *q)
{
  hb_qlist_init(&q->list);
  q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->efd < 0)
    return -errno;
  pthread_mutex_init(&q->lock, NULL);
  return 0;
}

void hb_queue_destroy(struct hb_queue *q)
{
  if (q->efd >= 0)
    close(q->efd);
  q->efd = -1;
  pthread_mutex_destroy(&q->lock);
}

int hb_queue_push(struct hb_queue *q, struct hb_qnode *n)
{
  bool was_empty;

  n->next = NULL;
  pthread_mutex_lock(&q->lock);
  was_empty = q->list.head == NULL;
  *q->list.tail = n;
  q->list.tail = &n->next;
  pthread_mutex_unlock(&q->lock);

  /* From here the node is the consumer's: a caller must never reuse or
   * free it, so nothing below may report a failure. A write to the
   * eventfd fails only with EAGAIN (the counter is saturated: the consumer
   * is awake anyway) or EINTR (try again). */
  if (was_empty) {
    uint64_t one = 1;
    while (write(q->efd, &one, sizeof one) < 0 && errno == EINTR)
      ;
  }
  return 0;
}

struct hb_qnode *hb_queue_take(struct hb_queue *q)
{
  struct hb_qnode *list;

  pthread_mutex_lock(&q->lock);
  list = q->list.head;
  hb_qlist_init(&q->list);
  pthread_mutex_unlock(&q->lock);
  return list;
}

void hb_queue_ack(struct hb_queue *q)
{
  uint64_t v;
  ssize_t r = read(q->efd, &v, sizeof v);
  (void) r; /* EAGAIN: nothing to consume */
}
