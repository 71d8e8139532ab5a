#include <errno.h>

#include "align.h"

int hb_chunk_next(uint64_t off, uint64_t len, uint32_t align, uint64_t max,
                  uint64_t pos, struct hb_chunk *c)
{
  uint64_t end, aend, mask, ustart, uend;

  if (len == 0 || align == 0 || (align & (align - 1)) || max < align ||
      !hb_is_aligned(max, align) || !hb_is_aligned(pos, align))
    return -EINVAL;
  mask = (uint64_t) align - 1;
  if (__builtin_add_overflow(off, len, &end) ||
      __builtin_add_overflow(end, mask, &aend))
    return -EINVAL;
  aend &= ~mask;
  if (pos >= aend)
    return 0;
  if (pos < hb_align_down(off, align))
    return -EINVAL;

  c->off = pos;
  c->len = aend - pos < max ? aend - pos : max;
  ustart = off > pos ? off : pos;
  uend = end < pos + c->len ? end : pos + c->len;
  c->data_off = ustart - pos;
  c->data_len = uend - ustart;
  c->src = ustart - off;
  c->read_first = ustart > pos || (c->len == align && uend < pos + c->len);
  c->read_last = uend < pos + c->len && c->len > align;
  return 1;
}

bool hb_direct_ok(const void *buf, uint64_t off, uint64_t len,
                  uint32_t mem_align, uint32_t off_align)
{
  return hb_is_aligned((uintptr_t) buf, mem_align) &&
         hb_is_aligned(off, off_align) && hb_is_aligned(len, off_align);
}
