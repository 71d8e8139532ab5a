/* The chunk planner against a table and against a byte model: carrying any
 * request through hb_chunk_next's pieces with read-modify-write must give
 * exactly the bytes of a plain write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "align.h"

struct row {
  uint64_t off, len;
  uint32_t align;
  uint64_t max, pos;
  int ret;
  struct hb_chunk want;
};

static const struct row rows[] = {
  /* aligned: one piece, nothing to pre-read */
  { 4096, 8192, 4096, 1 << 20, 4096, 1, { 4096, 8192, 0, 8192, 0, false, false } },
  /* inside one block: pre-read it once */
  { 100, 10, 4096, 1 << 20, 0, 1, { 0, 4096, 100, 10, 0, true, false } },
  /* ends on a boundary but starts inside */
  { 100, 3996, 4096, 1 << 20, 0, 1, { 0, 4096, 100, 3996, 0, true, false } },
  /* starts on a boundary, ends inside the same block */
  { 0, 10, 4096, 1 << 20, 0, 1, { 0, 4096, 0, 10, 0, true, false } },
  /* crosses a boundary, both edges partial */
  { 4000, 200, 4096, 1 << 20, 0, 1, { 0, 8192, 4000, 200, 0, true, true } },
  /* starts aligned, ends partial in a later block */
  { 0, 5000, 4096, 1 << 20, 0, 1, { 0, 8192, 0, 5000, 0, false, true } },
  /* split by max: first piece */
  { 512, 8192, 4096, 4096, 0, 1, { 0, 4096, 512, 3584, 0, true, false } },
  /* split by max: middle piece, whole */
  { 512, 8192, 4096, 4096, 4096, 1, { 4096, 4096, 0, 4096, 3584, false, false } },
  /* split by max: last piece, partial */
  { 512, 8192, 4096, 4096, 8192, 1, { 8192, 4096, 0, 512, 7680, true, false } },
  /* past the end */
  { 512, 8192, 4096, 4096, 12288, 0, { 0 } },
  /* bad input */
  { 0, 0, 4096, 4096, 0, -22, { 0 } },
  { 0, 10, 3000, 6000, 0, -22, { 0 } },
  { 0, 10, 4096, 6000, 0, -22, { 0 } },
  { 0, 10, 4096, 4096, 100, -22, { 0 } },
  { UINT64_MAX - 5, 10, 4096, 4096, 0, -22, { 0 } },
  { 8192, 10, 4096, 4096, 0, -22, { 0 } },    /* pos before the request */
};

static void test_table(void **state)
{
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const struct row *r = &rows[i];
    struct hb_chunk c;
    memset(&c, 0xa5, sizeof c);
    int ret = hb_chunk_next(r->off, r->len, r->align, r->max, r->pos, &c);
    print_message("# row %zu\n", i);
    assert_int_equal(ret, r->ret);
    if (ret != 1)
      continue;
    assert_int_equal(c.off, r->want.off);
    assert_int_equal(c.len, r->want.len);
    assert_int_equal(c.data_off, r->want.data_off);
    assert_int_equal(c.data_len, r->want.data_len);
    assert_int_equal(c.src, r->want.src);
    assert_int_equal(c.read_first, r->want.read_first);
    assert_int_equal(c.read_last, r->want.read_last);
  }
}

/* A device of DEV bytes; a write through the planner must equal a memcpy. */
#define DEV 65536

static void rmw_write(unsigned char *disk, const unsigned char *src, uint64_t off,
                      uint64_t len, uint32_t align, uint64_t max)
{
  unsigned char bounce[16384];
  struct hb_chunk c;
  int r;

  assert_true(max <= sizeof bounce);
  for (uint64_t pos = hb_align_down(off, align);
       (r = hb_chunk_next(off, len, align, max, pos, &c)) > 0; pos += c.len) {
    assert_true(c.len <= max && c.len % align == 0 && c.off % align == 0);
    /* whatever is not pre-read or overwritten is poison: it would show */
    memset(bounce, 0xee, sizeof bounce);
    if (c.read_first)
      memcpy(bounce, disk + c.off, align);
    if (c.read_last)
      memcpy(bounce + c.len - align, disk + c.off + c.len - align, align);
    memcpy(bounce + c.data_off, src + c.src, c.data_len);
    memcpy(disk + c.off, bounce, c.len);
  }
  assert_int_equal(r, 0);
}

static void test_model(void **state)
{
  static unsigned char disk[DEV], model[DEV], src[DEV];
  static const uint32_t aligns[] = { 512, 4096 };
  static const uint64_t maxes[] = { 4096, 8192, 16384 };

  srand(12345);
  for (size_t i = 0; i < DEV; i++)
    disk[i] = model[i] = (unsigned char) rand();
  for (int iter = 0; iter < 20000; iter++) {
    uint32_t align = aligns[rand() % 2];
    uint64_t max = maxes[rand() % 3];
    if (max < align)
      max = align;
    uint64_t off = (uint64_t) rand() % (DEV - 1);
    uint64_t len = 1 + (uint64_t) rand() % (rand() % 4 ? 300 : 20000);
    if (off + len > DEV)
      len = DEV - off;
    for (uint64_t k = 0; k < len; k++)
      src[k] = (unsigned char) rand();
    rmw_write(disk, src, off, len, align, max);
    memcpy(model + off, src, len);
    if (memcmp(disk, model, DEV) != 0)
      fail_msg("mismatch after write off=%llu len=%llu align=%u max=%llu",
               (unsigned long long) off, (unsigned long long) len, align,
               (unsigned long long) max);
  }
}

static void test_direct_ok(void **state)
{
  char *p = (char *) (uintptr_t) 0x10000;
  assert_true(hb_direct_ok(p, 4096, 4096, 512, 4096));
  assert_false(hb_direct_ok(p + 8, 4096, 4096, 512, 4096));
  assert_false(hb_direct_ok(p, 4095, 4096, 512, 4096));
  assert_false(hb_direct_ok(p, 4096, 100, 512, 4096));
  assert_true(hb_direct_ok(p + 512, 512, 512, 512, 512));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_table),
    cmocka_unit_test(test_model),
    cmocka_unit_test(test_direct_ok),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
