/* The in-memory out-of-sync bitmap: pure, no I/O. See bitmap.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"

/* Bits [lo, hi] of a word (0 <= lo <= hi <= 63). */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
  uint64_t upto_hi = hi == 63 ? UINT64_MAX : (UINT64_C(1) << (hi + 1)) - 1;

  return upto_hi & ~((UINT64_C(1) << lo) - 1);
}

int hb_bitmap_init(struct hb_bitmap *bm, uint64_t size, uint32_t granularity)
{
  memset(bm, 0, sizeof *bm);
  if (granularity == 0)
    granularity = HB_BITMAP_GRANULARITY_DEFAULT;
  if (granularity < HB_BITMAP_GRANULARITY_MIN ||
      granularity > HB_BITMAP_GRANULARITY_MAX ||
      (granularity & (granularity - 1)) != 0)
    return -EINVAL;

  unsigned shift = (unsigned) __builtin_ctz(granularity);
  uint64_t nbits = (size >> shift) + ((size & (granularity - 1)) != 0);
  uint64_t nwords = nbits / 64 + (nbits % 64 != 0);

  if (nwords > SIZE_MAX / sizeof(uint64_t))
    return -ENOMEM;
  if (nwords > 0) {
    bm->words = calloc((size_t) nwords, sizeof(uint64_t));
    if (!bm->words)
      return -ENOMEM;
  }
  bm->size = size;
  bm->nbits = nbits;
  bm->nwords = nwords;
  bm->granularity = granularity;
  bm->shift = shift;
  return 0;
}

void hb_bitmap_free(struct hb_bitmap *bm)
{
  free(bm->words);
  memset(bm, 0, sizeof *bm);
}

static bool range_ok(const struct hb_bitmap *bm, uint64_t off, uint64_t len)
{
  return off <= bm->size && len <= bm->size - off;
}

/* Set (or clear) bits [first, last]; returns how many changed. */
static uint64_t change_bits(struct hb_bitmap *bm, uint64_t first,
                            uint64_t last, bool set)
{
  uint64_t changed = 0;
  uint64_t w = first / 64, wlast = last / 64;

  for (; w <= wlast; w++) {
    unsigned lo = w == first / 64 ? (unsigned) (first % 64) : 0;
    unsigned hi = w == wlast ? (unsigned) (last % 64) : 63;
    uint64_t mask = word_mask(lo, hi);
    uint64_t flip = (set ? ~bm->words[w] : bm->words[w]) & mask;

    changed += (uint64_t) __builtin_popcountll(flip);
    bm->words[w] ^= flip;
  }
  if (set)
    bm->count += changed;
  else
    bm->count -= changed;
  return changed;
}

int64_t hb_bitmap_set_range(struct hb_bitmap *bm, uint64_t off, uint64_t len)
{
  if (!range_ok(bm, off, len))
    return -ERANGE;
  if (len == 0)
    return 0;
  /* off + len <= size, so it does not overflow. */
  return (int64_t) change_bits(bm, off >> bm->shift,
                               (off + len - 1) >> bm->shift, true);
}

int64_t hb_bitmap_clear_range(struct hb_bitmap *bm, uint64_t off,
                              uint64_t len)
{
  uint64_t end, first, stop;

  if (!range_ok(bm, off, len))
    return -ERANGE;
  if (len == 0)
    return 0;
  end = off + len;
  /* First bit starting at or after off: ceil(off / granularity), written so
   * that it cannot overflow. */
  first = (off >> bm->shift) + ((off & (bm->granularity - 1)) != 0);
  /* One past the last bit ending at or before end; the range's reaching the
   * device's end covers the partial last bit too. */
  stop = end == bm->size ? bm->nbits : end >> bm->shift;
  if (first >= stop)
    return 0;
  return (int64_t) change_bits(bm, first, stop - 1, false);
}

bool hb_bitmap_test(const struct hb_bitmap *bm, uint64_t bit)
{
  if (bit >= bm->nbits)
    return false;
  return (bm->words[bit / 64] >> (bit % 64)) & 1;
}

uint64_t hb_bitmap_count(const struct hb_bitmap *bm)
{
  return bm->count;
}

uint64_t hb_bitmap_oos_bytes(const struct hb_bitmap *bm)
{
  uint64_t last, tail;

  if (bm->count == 0)
    return 0;
  last = bm->nbits - 1;
  tail = bm->size - (last << bm->shift);   /* bytes of the last bit */
  if (tail != bm->granularity && hb_bitmap_test(bm, last))
    return ((bm->count - 1) << bm->shift) + tail;
  return bm->count << bm->shift;
}

/* First bit at or after from_bit whose value is `want`. */
static uint64_t next_bit(const struct hb_bitmap *bm, uint64_t from_bit,
                         bool want)
{
  uint64_t w, word;

  if (from_bit >= bm->nbits)
    return HB_BITMAP_NONE;
  w = from_bit / 64;
  word = want ? bm->words[w] : ~bm->words[w];
  word &= ~((UINT64_C(1) << (from_bit % 64)) - 1);
  for (;;) {
    if (word) {
      uint64_t bit = w * 64 + (uint64_t) __builtin_ctzll(word);

      /* ~word has ones past nbits in the last word. */
      return bit < bm->nbits ? bit : HB_BITMAP_NONE;
    }
    if (++w >= bm->nwords)
      return HB_BITMAP_NONE;
    word = want ? bm->words[w] : ~bm->words[w];
  }
}

uint64_t hb_bitmap_next_set(const struct hb_bitmap *bm, uint64_t from_bit)
{
  return next_bit(bm, from_bit, true);
}

uint64_t hb_bitmap_next_clear(const struct hb_bitmap *bm, uint64_t from_bit)
{
  return next_bit(bm, from_bit, false);
}

int hb_bitmap_bit_bytes(const struct hb_bitmap *bm, uint64_t bit,
                        uint64_t *off, uint64_t *len)
{
  uint64_t start;

  if (bit >= bm->nbits)
    return -ERANGE;
  start = bit << bm->shift;
  *off = start;
  *len = bm->size - start < bm->granularity ? bm->size - start
                                            : bm->granularity;
  return 0;
}
