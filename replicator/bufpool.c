/* Payload buffer pool (bufpool.h). One free list per size class under one
 * mutex: a lock per received frame is cheap next to what the frame costs. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "bufpool.h"

#define MIN_SHIFT 12u                  /* 4 KiB */
#define MAX_SHIFT 26u                  /* 64 MiB, the wire's largest write */
#define NCLASS (MAX_SHIFT - MIN_SHIFT + 1u)
#define CACHE_BYTES ((size_t) 64 << 20) /* kept for reuse, all classes */

struct freebuf {
  struct freebuf *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct freebuf *free_list[NCLASS];
static size_t cached;                  /* bytes on the free lists */

static int class_of(size_t len)
{
  unsigned c = 0;

  if (len > ((size_t) 1 << MAX_SHIFT))
    return -1;
  while (((size_t) 1 << (MIN_SHIFT + c)) < len)
    c++;
  return (int) c;
}

static size_t class_size(int c)
{
  return (size_t) 1 << (MIN_SHIFT + (unsigned) c);
}

void *hb_buf_alloc(size_t len)
{
  int c = class_of(len ? len : 1);
  struct freebuf *b;
  void *p;

  if (c < 0)
    return NULL;
  pthread_mutex_lock(&lock);
  b = free_list[c];
  if (b) {
    free_list[c] = b->next;
    cached -= class_size(c);
  }
  pthread_mutex_unlock(&lock);
  if (b)
    return b;
  if (posix_memalign(&p, 4096, class_size(c)))
    return NULL;
  return p;
}

void hb_buf_free(void *buf, size_t len)
{
  int c = class_of(len ? len : 1);
  struct freebuf *b = buf;

  if (!buf)
    return;
  if (c >= 0) {
    pthread_mutex_lock(&lock);
    if (cached + class_size(c) <= CACHE_BYTES) {
      b->next = free_list[c];
      free_list[c] = b;
      cached += class_size(c);
      b = NULL;
    }
    pthread_mutex_unlock(&lock);
  }
  free(b);
}

size_t hb_buf_cached(void)
{
  size_t n;

  pthread_mutex_lock(&lock);
  n = cached;
  pthread_mutex_unlock(&lock);
  return n;
}

void hb_buf_trim(void)
{
  for (unsigned c = 0; c < NCLASS; c++) {
    pthread_mutex_lock(&lock);
    struct freebuf *b = free_list[c];
    free_list[c] = NULL;
    for (struct freebuf *x = b; x; x = x->next)
      cached -= class_size((int) c);
    pthread_mutex_unlock(&lock);
    while (b) {
      struct freebuf *next = b->next;
      free(b);
      b = next;
    }
  }
}
