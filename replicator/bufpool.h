/* Payload buffers for what the peer sends: 4096-aligned (O_DIRECT takes
 * them as they are), in power-of-two size classes from 4 KiB, kept for
 * reuse when freed. A fresh malloc of a large buffer is an mmap whose every
 * page faults and is zeroed on first touch: at 1 MiB writes that cost the
 * Secondary's loop thread more than decrypting them. Thread-safe. */
#ifndef HB_BUFPOOL_H
#define HB_BUFPOOL_H

#include <stddef.h>

/* A buffer of at least len bytes (len <= 64 MiB), or NULL. */
void *hb_buf_alloc(size_t len);
/* Give it back; len is what was asked for. NULL is ignored. */
void hb_buf_free(void *buf, size_t len);
/* Bytes kept for reuse now (status, tests). */
size_t hb_buf_cached(void);
/* Return every cached buffer to the system (tests, shutdown). */
void hb_buf_trim(void);

#endif
