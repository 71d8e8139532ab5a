/* The out-of-sync bitmap: tables for the edges (zero length, the partial
 * last bit, ranges across words, overflow), then a fixed-seed random
 * sequence checked against a naive per-bit model. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bitmap.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define G 4096u
#define NONE HB_BITMAP_NONE

/* Bits set must be exactly [first, last] (none when first > last). */
static void assert_exactly(const struct hb_bitmap *bm, uint64_t first,
                           uint64_t last)
{
  uint64_t n = 0;

  for (uint64_t b = 0; b < bm->nbits; b++) {
    bool want = b >= first && b <= last;

    assert_int_equal(hb_bitmap_test(bm, b), want);
    n += want;
  }
  assert_int_equal(hb_bitmap_count(bm), n);
  /* Bits past the end stay zero. */
  if (bm->nbits % 64)
    assert_int_equal(bm->words[bm->nwords - 1] >> (bm->nbits % 64), 0);
}

/* ---- init ----------------------------------------------------------------- */

static void test_init(void **state)
{
  static const struct {
    uint64_t size;
    uint32_t gran;
    int ret;
    uint32_t want_gran;
    uint64_t nbits, nwords;
  } rows[] = {
    { 1 << 20, 0, 0, G, 256, 4 },
    { 1 << 20, G, 0, G, 256, 4 },
    { 1 << 20, 512, 0, 512, 2048, 32 },
    { 1 << 20, 1u << 31, 0, 1u << 31, 1, 1 },
    { 0, G, 0, G, 0, 0 },
    { 1, G, 0, G, 1, 1 },
    { G, G, 0, G, 1, 1 },
    { G + 1, G, 0, G, 2, 1 },
    { 64 * G, G, 0, G, 64, 1 },
    { 64 * G + 1, G, 0, G, 65, 2 },
    { 128 * G, G, 0, G, 128, 2 },
    { (UINT64_C(1) << 40) + 1, 1u << 31, 0, 1u << 31, 513, 9 },
    { 1 << 20, 256, -EINVAL, 0, 0, 0 },
    { 1 << 20, 1, -EINVAL, 0, 0, 0 },
    { 1 << 20, 3000, -EINVAL, 0, 0, 0 },
    { 1 << 20, 4097, -EINVAL, 0, 0, 0 },
    { 1 << 20, UINT32_MAX, -EINVAL, 0, 0, 0 },
    { 1 << 20, (1u << 31) + 4096, -EINVAL, 0, 0, 0 },
  };

  for (size_t i = 0; i < N(rows); i++) {
    struct hb_bitmap bm;

    print_message("# row %zu\n", i);
    memset(&bm, 0xa5, sizeof bm);
    assert_int_equal(hb_bitmap_init(&bm, rows[i].size, rows[i].gran),
                     rows[i].ret);
    if (rows[i].ret == 0) {
      assert_int_equal(bm.size, rows[i].size);
      assert_int_equal(bm.granularity, rows[i].want_gran);
      assert_int_equal(UINT64_C(1) << bm.shift, rows[i].want_gran);
      assert_int_equal(bm.nbits, rows[i].nbits);
      assert_int_equal(bm.nwords, rows[i].nwords);
      assert_exactly(&bm, 1, 0);
      assert_int_equal(hb_bitmap_oos_bytes(&bm), 0);
    } else {
      assert_null(bm.words);
      assert_int_equal(bm.nbits, 0);
    }
    hb_bitmap_free(&bm);
    assert_null(bm.words);
    hb_bitmap_free(&bm);           /* harmless twice */
  }
}

/* ---- set ------------------------------------------------------------------ */

static const struct {
  uint64_t size;
  uint32_t gran;
  uint64_t off, len;
  int64_t ret;
  uint64_t first, last;   /* bits set afterwards; first > last: none */
} set_rows[] = {
  /* zero length, anywhere up to the end */
  { 10000, G, 0, 0, 0, 1, 0 },
  { 10000, G, 5000, 0, 0, 1, 0 },
  { 10000, G, 10000, 0, 0, 1, 0 },
  { 10000, G, 10001, 0, -ERANGE, 1, 0 },
  { 0, G, 0, 0, 0, 1, 0 },
  { 0, G, 0, 1, -ERANGE, 1, 0 },
  /* one byte marks its whole bit */
  { 10000, G, 0, 1, 1, 0, 0 },
  { 10000, G, 4095, 1, 1, 0, 0 },
  { 10000, G, 4096, 1, 1, 1, 1 },
  /* two bytes across a bit boundary */
  { 10000, G, 4095, 2, 2, 0, 1 },
  /* exactly one bit, and one byte more */
  { 10000, G, 4096, 4096, 1, 1, 1 },
  { 10000, G, 4096, 4097, 2, 1, 2 },
  /* the partial last bit */
  { 10000, G, 9999, 1, 1, 2, 2 },
  { 10000, G, 8192, 1808, 1, 2, 2 },
  { 10000, G, 8191, 1809, 2, 1, 2 },
  { 10000, G, 0, 10000, 3, 0, 2 },
  /* past the end, and every way off + len could overflow */
  { 10000, G, 9999, 2, -ERANGE, 1, 0 },
  { 10000, G, 0, 10001, -ERANGE, 1, 0 },
  { 10000, G, UINT64_MAX, 1, -ERANGE, 1, 0 },
  { 10000, G, 1, UINT64_MAX, -ERANGE, 1, 0 },
  { 10000, G, 4096, UINT64_MAX - 4095, -ERANGE, 1, 0 },  /* wraps to 0 */
  { 10000, G, 4096, UINT64_MAX - 4094, -ERANGE, 1, 0 },  /* wraps to 1 */
  { 10000, G, UINT64_MAX, UINT64_MAX, -ERANGE, 1, 0 },
  /* across words */
  { 1 << 20, G, 63 * G, 2 * G, 2, 63, 64 },
  { 1 << 20, G, 63 * G + 4095, 2, 2, 63, 64 },
  { 1 << 20, G, 64 * G - 1, 1, 1, 63, 63 },
  { 1 << 20, G, 64 * G, 1, 1, 64, 64 },
  { 1 << 20, G, 1, 200 * G, 201, 0, 200 },
  { 1 << 20, G, 0, 1 << 20, 256, 0, 255 },
  { 1 << 20, G, 127 * G, 129 * G, 129, 127, 255 },
  /* a word's last bit is the device's last bit */
  { 128 * G, G, 127 * G, G, 1, 127, 127 },
  { 128 * G - 1, G, 128 * G - 2, 1, 1, 127, 127 },
  /* other granularities */
  { 1000, 512, 511, 2, 2, 0, 1 },
  { 1000, 512, 999, 1, 1, 1, 1 },
  { UINT64_C(5) << 30, 1u << 31, (UINT64_C(4) << 30) + 7, 1, 1, 2, 2 },
  { UINT64_C(5) << 30, 1u << 31, 0, UINT64_C(5) << 30, 3, 0, 2 },
};

static void test_set_range(void **state)
{
  for (size_t i = 0; i < N(set_rows); i++) {
    struct hb_bitmap bm;

    print_message("# row %zu\n", i);
    assert_int_equal(hb_bitmap_init(&bm, set_rows[i].size, set_rows[i].gran),
                     0);
    assert_int_equal(hb_bitmap_set_range(&bm, set_rows[i].off,
                                         set_rows[i].len), set_rows[i].ret);
    assert_exactly(&bm, set_rows[i].first, set_rows[i].last);
    /* Setting again sets nothing new. */
    if (set_rows[i].ret >= 0)
      assert_int_equal(hb_bitmap_set_range(&bm, set_rows[i].off,
                                           set_rows[i].len), 0);
    hb_bitmap_free(&bm);
  }
}

static void test_set_overlap(void **state)
{
  struct hb_bitmap bm;

  assert_int_equal(hb_bitmap_init(&bm, 1 << 20, G), 0);
  assert_int_equal(hb_bitmap_set_range(&bm, 0, 4 * G), 4);
  assert_int_equal(hb_bitmap_set_range(&bm, 2 * G, 4 * G), 2);
  assert_int_equal(hb_bitmap_set_range(&bm, 0, 6 * G), 0);
  assert_int_equal(hb_bitmap_set_range(&bm, 10 * G, 100 * G), 100);
  assert_int_equal(hb_bitmap_set_range(&bm, 0, 1 << 20), 256 - 106);
  assert_int_equal(hb_bitmap_count(&bm), 256);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 1 << 20);
  hb_bitmap_free(&bm);
}

/* ---- clear ---------------------------------------------------------------- */

/* Start all set; clear; these bits remain (a bitmask over the first 64). */
static const struct {
  uint64_t size;
  uint64_t off, len;
  int64_t ret;
  uint64_t remain;       /* bit b of remain: bit b still set (b < 64) */
} clear_rows[] = {
  /* 10000 bytes: bits 0 [0,4096) 1 [4096,8192) 2 [8192,10000) */
  { 10000, 0, 0, 0, 07 },
  { 10000, 10000, 0, 0, 07 },
  { 10000, 10001, 0, -ERANGE, 07 },
  { 10000, 0, 4096, 1, 06 },
  { 10000, 0, 4095, 0, 07 },
  { 10000, 1, 4096, 0, 07 },
  { 10000, 1, 8191, 1, 05 },
  { 10000, 4096, 4096, 1, 05 },
  { 10000, 4095, 4098, 1, 05 },
  /* the partial last bit is covered when the range reaches the end */
  { 10000, 8192, 1808, 1, 03 },
  { 10000, 8192, 1807, 0, 07 },
  { 10000, 8193, 1807, 0, 07 },
  { 10000, 4096, 5904, 2, 01 },
  { 10000, 0, 10000, 3, 00 },
  { 10000, 1, 9999, 2, 01 },
  /* overflow and past the end: nothing changes */
  { 10000, 0, 10001, -ERANGE, 07 },
  { 10000, 5000, UINT64_MAX, -ERANGE, 07 },
  { 10000, UINT64_MAX, 1, -ERANGE, 07 },
  { 10000, 4096, UINT64_MAX - 4095, -ERANGE, 07 },
  /* size a multiple of the granularity */
  { 8192, 4096, 4096, 1, 01 },
  { 8192, 4096, 4095, 0, 03 },
  /* 70 bits: across the first word's end */
  { 70 * G, 63 * G, 2 * G, 2, UINT64_C(0x7fffffffffffffff) },
  { 70 * G, 62 * G + 1, 3 * G, 2, UINT64_C(0x3fffffffffffffff) |
                                  (UINT64_C(1) << 62) },
  { 70 * G, 0, 64 * G, 64, 0 },
  { 70 * G, 0, 70 * G, 70, 0 },
};

static void test_clear_range(void **state)
{
  for (size_t i = 0; i < N(clear_rows); i++) {
    struct hb_bitmap bm;
    uint64_t remain = 0, others = 0;

    print_message("# row %zu\n", i);
    assert_int_equal(hb_bitmap_init(&bm, clear_rows[i].size, G), 0);
    assert_int_equal(hb_bitmap_set_range(&bm, 0, clear_rows[i].size),
                     (int64_t) bm.nbits);
    assert_int_equal(hb_bitmap_clear_range(&bm, clear_rows[i].off,
                                           clear_rows[i].len),
                     clear_rows[i].ret);
    for (uint64_t b = 0; b < bm.nbits; b++) {
      if (b < 64)
        remain |= (uint64_t) hb_bitmap_test(&bm, b) << b;
      else
        others += hb_bitmap_test(&bm, b);
    }
    assert_int_equal(remain, clear_rows[i].remain);
    assert_int_equal(hb_bitmap_count(&bm),
                     (uint64_t) __builtin_popcountll(remain) + others);
    /* Clearing again clears nothing. */
    if (clear_rows[i].ret >= 0)
      assert_int_equal(hb_bitmap_clear_range(&bm, clear_rows[i].off,
                                             clear_rows[i].len), 0);
    hb_bitmap_free(&bm);
  }
}

/* ---- test, walk, bytes ---------------------------------------------------- */

static void test_empty(void **state)
{
  struct hb_bitmap bm;
  uint64_t off, len;

  assert_int_equal(hb_bitmap_init(&bm, 0, 0), 0);
  assert_null(bm.words);
  assert_false(hb_bitmap_test(&bm, 0));
  assert_int_equal(hb_bitmap_next_set(&bm, 0), NONE);
  assert_int_equal(hb_bitmap_next_clear(&bm, 0), NONE);
  assert_int_equal(hb_bitmap_count(&bm), 0);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 0);
  assert_int_equal(hb_bitmap_clear_range(&bm, 0, 0), 0);
  assert_int_equal(hb_bitmap_bit_bytes(&bm, 0, &off, &len), -ERANGE);
  hb_bitmap_free(&bm);
}

static void test_walk(void **state)
{
  struct hb_bitmap bm;

  /* 130 bits: the last word holds two. */
  assert_int_equal(hb_bitmap_init(&bm, 130 * G, G), 0);
  assert_int_equal(hb_bitmap_next_set(&bm, 0), NONE);
  assert_int_equal(hb_bitmap_next_clear(&bm, 0), 0);
  assert_int_equal(hb_bitmap_next_clear(&bm, 129), 129);
  assert_int_equal(hb_bitmap_next_clear(&bm, 130), NONE);
  assert_false(hb_bitmap_test(&bm, 130));
  assert_false(hb_bitmap_test(&bm, UINT64_MAX));

  assert_int_equal(hb_bitmap_set_range(&bm, 127 * G, 1), 1);
  assert_int_equal(hb_bitmap_next_set(&bm, 0), 127);
  assert_int_equal(hb_bitmap_next_set(&bm, 127), 127);
  assert_int_equal(hb_bitmap_next_set(&bm, 128), NONE);
  assert_int_equal(hb_bitmap_next_clear(&bm, 127), 128);

  assert_int_equal(hb_bitmap_set_range(&bm, 129 * G, G), 1);
  assert_int_equal(hb_bitmap_next_set(&bm, 128), 129);
  assert_int_equal(hb_bitmap_next_clear(&bm, 129), NONE);
  assert_int_equal(hb_bitmap_next_set(&bm, 130), NONE);
  assert_int_equal(hb_bitmap_next_set(&bm, UINT64_MAX), NONE);

  /* All set: no clear bit, though the last word has room past the end. */
  assert_int_equal(hb_bitmap_set_range(&bm, 0, 130 * G), 128);
  assert_int_equal(hb_bitmap_next_clear(&bm, 0), NONE);
  assert_int_equal(hb_bitmap_next_clear(&bm, 64), NONE);
  assert_int_equal(hb_bitmap_next_set(&bm, 63), 63);
  assert_int_equal(hb_bitmap_next_set(&bm, 64), 64);

  /* Runs, walked the way resync will. */
  assert_int_equal(hb_bitmap_clear_range(&bm, 0, 130 * G), 130);
  assert_int_equal(hb_bitmap_set_range(&bm, 3 * G, 2 * G), 2);
  assert_int_equal(hb_bitmap_set_range(&bm, 60 * G, 10 * G), 10);
  assert_int_equal(hb_bitmap_set_range(&bm, 128 * G, 2 * G), 2);
  static const uint64_t runs[][2] = { { 3, 5 }, { 60, 70 }, { 128, NONE } };
  size_t n = 0;
  for (uint64_t b = hb_bitmap_next_set(&bm, 0), e; b != NONE;
       b = hb_bitmap_next_set(&bm, e)) {
    e = hb_bitmap_next_clear(&bm, b);
    assert_true(n < N(runs));
    assert_int_equal(b, runs[n][0]);
    assert_int_equal(e, runs[n][1]);
    n++;
  }
  assert_int_equal(n, N(runs));
  hb_bitmap_free(&bm);
}

static void test_bit_bytes(void **state)
{
  static const struct {
    uint64_t size;
    uint32_t gran;
    uint64_t bit;
    int ret;
    uint64_t off, len;
  } rows[] = {
    { 10000, G, 0, 0, 0, 4096 },
    { 10000, G, 1, 0, 4096, 4096 },
    { 10000, G, 2, 0, 8192, 1808 },
    { 10000, G, 3, -ERANGE, 0, 0 },
    { 10000, G, UINT64_MAX, -ERANGE, 0, 0 },
    { 8192, G, 1, 0, 4096, 4096 },
    { 1, 512, 0, 0, 0, 1 },
    { UINT64_C(5) << 30, 1u << 31, 2, 0, UINT64_C(4) << 30, 1u << 30 },
  };

  for (size_t i = 0; i < N(rows); i++) {
    struct hb_bitmap bm;
    uint64_t off = 7, len = 7;

    print_message("# row %zu\n", i);
    assert_int_equal(hb_bitmap_init(&bm, rows[i].size, rows[i].gran), 0);
    assert_int_equal(hb_bitmap_bit_bytes(&bm, rows[i].bit, &off, &len),
                     rows[i].ret);
    if (rows[i].ret == 0) {
      assert_int_equal(off, rows[i].off);
      assert_int_equal(len, rows[i].len);
    }
    hb_bitmap_free(&bm);
  }
}

static void test_oos_bytes(void **state)
{
  struct hb_bitmap bm;

  /* 10000 bytes: the last bit holds 1808. */
  assert_int_equal(hb_bitmap_init(&bm, 10000, G), 0);
  assert_int_equal(hb_bitmap_set_range(&bm, 9000, 1), 1);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 1808);
  assert_int_equal(hb_bitmap_set_range(&bm, 0, 1), 1);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 4096 + 1808);
  assert_int_equal(hb_bitmap_set_range(&bm, 5000, 1), 1);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 10000);
  assert_int_equal(hb_bitmap_clear_range(&bm, 8192, 1808), 1);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 8192);
  assert_int_equal(hb_bitmap_clear_range(&bm, 0, 10000), 2);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 0);
  hb_bitmap_free(&bm);

  /* A large device with a one-byte last bit, few bits. */
  uint64_t size = (UINT64_C(1) << 40) + 1;
  assert_int_equal(hb_bitmap_init(&bm, size, 1u << 31), 0);
  assert_int_equal(hb_bitmap_set_range(&bm, size - 1, 1), 1);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 1);
  assert_int_equal(hb_bitmap_set_range(&bm, 0, size), 512);
  assert_int_equal(hb_bitmap_count(&bm), 513);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), size);
  assert_int_equal(hb_bitmap_clear_range(&bm, 0, size - 1), 512);
  assert_int_equal(hb_bitmap_oos_bytes(&bm), 1);
  hb_bitmap_free(&bm);
}

/* ---- against a model ------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void)
{
  /* xorshift64*, fixed seed: the same sequence on every run. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * UINT64_C(2685821657736338717);
}

struct model {
  uint64_t size, gran, nbits;
  bool *bits;
};

static uint64_t model_bit_len(const struct model *m, uint64_t b)
{
  uint64_t start = b * m->gran;

  return m->size - start < m->gran ? m->size - start : m->gran;
}

/* The rules written the slow way, byte ranges against bit ranges. */
static int64_t model_apply(struct model *m, uint64_t off, uint64_t len,
                           bool set)
{
  int64_t changed = 0;

  if (off > m->size || off + len > m->size || off + len < off)
    return -ERANGE;
  for (uint64_t b = 0; b < m->nbits; b++) {
    uint64_t start = b * m->gran, end = start + model_bit_len(m, b);
    bool hit = set ? (len > 0 && start < off + len && end > off)
                   : (start >= off && end <= off + len);

    if (hit && m->bits[b] != set) {
      m->bits[b] = set;
      changed++;
    }
  }
  return changed;
}

static void check_model(const struct hb_bitmap *bm, const struct model *m)
{
  uint64_t count = 0, bytes = 0;

  for (uint64_t b = 0; b < m->nbits; b++) {
    assert_int_equal(hb_bitmap_test(bm, b), m->bits[b]);
    if (m->bits[b]) {
      count++;
      bytes += model_bit_len(m, b);
    }
  }
  assert_int_equal(hb_bitmap_count(bm), count);
  assert_int_equal(hb_bitmap_oos_bytes(bm), bytes);
}

static uint64_t model_next(const struct model *m, uint64_t from, bool want)
{
  for (uint64_t b = from; b < m->nbits; b++)
    if (m->bits[b] == want)
      return b;
  return NONE;
}

/* An offset that likes edges: 0, the end, bit and word boundaries +-1. */
static uint64_t pick_offset(const struct model *m)
{
  uint64_t b = rnd() % (m->nbits + 1), x = b * m->gran;

  switch (rnd() % 6) {
  case 0: return 0;
  case 1: return m->size;
  case 2: return x > m->size ? m->size : x;
  case 3: return x > 0 && x - 1 <= m->size ? x - 1 : 0;
  case 4: return (b & ~UINT64_C(63)) * m->gran <= m->size
                 ? (b & ~UINT64_C(63)) * m->gran : 0;
  default: return rnd() % (m->size + 1);
  }
}

static void run_model(uint64_t size, uint32_t gran, unsigned steps)
{
  struct hb_bitmap bm;
  struct model m = { .size = size, .gran = gran };
  unsigned ranges_bad = 0;

  assert_int_equal(hb_bitmap_init(&bm, size, gran), 0);
  m.nbits = bm.nbits;
  m.bits = calloc(m.nbits + 1, sizeof(bool));
  assert_non_null(m.bits);

  for (unsigned i = 0; i < steps; i++) {
    uint64_t off = pick_offset(&m), len;
    bool set = rnd() % 2;
    int64_t want, got;

    switch (rnd() % 8) {
    case 0: len = 0; break;
    case 1: len = size - off; break;                   /* to the end */
    case 2: len = 1 + rnd() % 3; break;
    case 3: len = (1 + rnd() % 3) * gran; break;
    case 4: len = UINT64_MAX - rnd() % 4; break;       /* overflows */
    case 5: len = size - off + 1; break;               /* one too many */
    default: len = rnd() % (size / 4 + 1); break;
    }
    want = model_apply(&m, off, len, set);
    got = set ? hb_bitmap_set_range(&bm, off, len)
              : hb_bitmap_clear_range(&bm, off, len);
    if (want != got)
      print_message("# step %u: %s off %" PRIu64 " len %" PRIu64
                    ": got %" PRId64 " want %" PRId64 "\n", i,
                    set ? "set" : "clear", off, len, got, want);
    assert_int_equal(got, want);
    ranges_bad += want < 0;
    check_model(&bm, &m);

    uint64_t from = rnd() % (m.nbits + 2);
    assert_int_equal(hb_bitmap_next_set(&bm, from),
                     model_next(&m, from, true));
    assert_int_equal(hb_bitmap_next_clear(&bm, from),
                     model_next(&m, from, false));
  }
  assert_true(ranges_bad > 0);
  /* The bits past the end never got set. */
  if (bm.nbits % 64)
    assert_int_equal(bm.words[bm.nwords - 1] >> (bm.nbits % 64), 0);
  free(m.bits);
  hb_bitmap_free(&bm);
}

static void test_model(void **state)
{
  rng_state = UINT64_C(0x9e3779b97f4a7c15);
  run_model(1000 * G + 123, G, 3000);     /* partial last bit */
  run_model(256 * G, G, 2000);            /* whole words */
  run_model(130 * 512 + 1, 512, 2000);    /* one-byte last bit */
  run_model(3 * G, G, 500);               /* fewer bits than a word */
  run_model(64 * G, G, 500);              /* exactly one word */
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_init),
    cmocka_unit_test(test_set_range),
    cmocka_unit_test(test_set_overlap),
    cmocka_unit_test(test_clear_range),
    cmocka_unit_test(test_empty),
    cmocka_unit_test(test_walk),
    cmocka_unit_test(test_bit_bytes),
    cmocka_unit_test(test_oos_bytes),
    cmocka_unit_test(test_model),
  };

  return cmocka_run_group_tests_name("bitmap", tests, NULL, NULL);
}
