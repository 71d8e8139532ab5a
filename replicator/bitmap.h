/* The in-memory out-of-sync bitmap: pure, no I/O.
 *
 * One bit per `granularity` bytes of the device (a power of two, 4096 by
 * default); bit b covers bytes [b * granularity, (b + 1) * granularity),
 * except the last bit, which stops at the device's size when the size is not
 * a multiple of the granularity. A set bit means "these bytes may differ from
 * the peer's": a write completed without the peer sets the bits it touched,
 * resync clears the bits it copied.
 *
 * Rounding is always on the safe side: setting marks every bit that the
 * range touches, even by one byte; clearing clears only the bits the range
 * covers entirely (a bit partly outside may still hold a difference).
 *
 * The number of bits set is kept up to date on every change, so
 * hb_bitmap_count() and hb_bitmap_oos_bytes() are O(1).
 *
 * Thread safety: none. The bitmap has no lock; the caller serializes every
 * call on one bitmap (readers included) with its own lock or by owning it
 * from one thread. */
#ifndef HB_BITMAP_H
#define HB_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#define HB_BITMAP_GRANULARITY_DEFAULT 4096u
#define HB_BITMAP_GRANULARITY_MIN     512u
#define HB_BITMAP_GRANULARITY_MAX     (1u << 31)

/* hb_bitmap_next_set/next_clear: no such bit. */
#define HB_BITMAP_NONE UINT64_MAX

/* The fields are read-only for callers. */
struct hb_bitmap {
  uint64_t *words;       /* nwords 64-bit words, bit b in words[b / 64] at
                            (b % 64); bits past nbits stay zero */
  uint64_t size;         /* device bytes */
  uint64_t nbits;        /* ceil(size / granularity) */
  uint64_t nwords;       /* ceil(nbits / 64) */
  uint64_t count;        /* bits set */
  uint32_t granularity;  /* bytes per bit */
  unsigned shift;        /* log2(granularity) */
};

/* Set up an all-clear bitmap for a device of `size` bytes (0 is allowed: no
 * bits). granularity 0 means HB_BITMAP_GRANULARITY_DEFAULT; otherwise it
 * must be a power of two from HB_BITMAP_GRANULARITY_MIN to _MAX. Returns 0,
 * -EINVAL for a bad granularity, or -ENOMEM (bm is then zeroed, and
 * hb_bitmap_free() on it is harmless). */
int hb_bitmap_init(struct hb_bitmap *bm, uint64_t size, uint32_t granularity);

/* Release the words and zero bm. Safe on a zeroed or freed bitmap. */
void hb_bitmap_free(struct hb_bitmap *bm);

/* Mark every bit touched by bytes [off, off+len). Returns the number of bits
 * that were clear and are now set (0 for len 0), or -ERANGE when the range
 * passes the device's end (off > size, or len > size - off: no overflow is
 * possible), leaving the bitmap unchanged. */
int64_t hb_bitmap_set_range(struct hb_bitmap *bm, uint64_t off, uint64_t len);

/* Clear the bits whose bytes lie entirely inside [off, off+len) (the partial
 * last bit counts as covered when the range reaches the device's end).
 * Returns the number of bits that were set and are now clear, or -ERANGE as
 * for hb_bitmap_set_range. */
int64_t hb_bitmap_clear_range(struct hb_bitmap *bm, uint64_t off,
                              uint64_t len);

/* Whether bit `bit` is set (false past the last bit). */
bool hb_bitmap_test(const struct hb_bitmap *bm, uint64_t bit);

/* Bits set. O(1). */
uint64_t hb_bitmap_count(const struct hb_bitmap *bm);

/* Bytes covered by the set bits: count * granularity, except that a set
 * partial last bit counts only its bytes inside the device. O(1). */
uint64_t hb_bitmap_oos_bytes(const struct hb_bitmap *bm);

/* The first set (clear) bit at or after from_bit, or HB_BITMAP_NONE. Walk
 * the runs to resync with:
 *   for (b = hb_bitmap_next_set(bm, 0); b != HB_BITMAP_NONE;
 *        b = hb_bitmap_next_set(bm, e)) {
 *     e = hb_bitmap_next_clear(bm, b);   (NONE: the run reaches the end)
 *     ... }
 */
uint64_t hb_bitmap_next_set(const struct hb_bitmap *bm, uint64_t from_bit);
uint64_t hb_bitmap_next_clear(const struct hb_bitmap *bm, uint64_t from_bit);

/* The bytes that bit `bit` covers: *off and *len (the last bit may be
 * shorter than the granularity). Returns 0, or -ERANGE past the last bit. */
int hb_bitmap_bit_bytes(const struct hb_bitmap *bm, uint64_t bit,
                        uint64_t *off, uint64_t *len);

#endif
