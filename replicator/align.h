/* Alignment arithmetic for direct I/O: pure, no I/O.
 *
 * An O_DIRECT descriptor takes only requests whose buffer, offset and length
 * are aligned. Any other request is carried through a bounce buffer of at
 * most `max` bytes at a time: hb_chunk_next() cuts the request's aligned
 * span into pieces and says, for each, where the caller's bytes go and which
 * edge blocks a write must read first (read-modify-write). */
#ifndef HB_ALIGN_H
#define HB_ALIGN_H

#include <stdbool.h>
#include <stdint.h>

static inline bool hb_is_aligned(uint64_t v, uint32_t align)
{
  return (v & ((uint64_t) align - 1)) == 0;
}

struct hb_chunk {
  uint64_t off;         /* aligned device offset of the piece */
  uint64_t len;         /* aligned length of the piece, <= max */
  uint64_t data_off;    /* where the caller's bytes start inside the piece */
  uint64_t data_len;    /* how many of the caller's bytes the piece holds */
  uint64_t src;         /* offset of those bytes in the caller's buffer */
  bool read_first;      /* the piece's first block is only partly covered */
  bool read_last;       /* its last block is only partly covered and is not
                           the first block */
};

/* The piece of request [off, off+len) that starts at aligned device offset
 * pos (start with pos = hb_align_down(off)). Returns 1 and fills c, 0 when
 * pos is past the request, -EINVAL for a bad alignment, a zero length, a max
 * that is not a multiple of align, or overflow. */
int hb_chunk_next(uint64_t off, uint64_t len, uint32_t align, uint64_t max,
                  uint64_t pos, struct hb_chunk *c);

static inline uint64_t hb_align_down(uint64_t v, uint32_t align)
{
  return v & ~((uint64_t) align - 1);
}

/* Whether a request can go straight to an O_DIRECT descriptor. */
bool hb_direct_ok(const void *buf, uint64_t off, uint64_t len,
                  uint32_t mem_align, uint32_t off_align);

#endif
