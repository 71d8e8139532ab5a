/* The payload buffer pool: alignment, size classes, reuse, the bound on
 * what it keeps, and many threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bufpool.h"

static void test_aligned_and_usable(void **state)
{
  static const size_t sizes[] = { 0, 1, 512, 4096, 4097, 65536, 1u << 20,
                                  (1u << 20) + 1, 64u << 20 };
  (void) state;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *b = hb_buf_alloc(sizes[i]);
    assert_non_null(b);
    assert_int_equal((uintptr_t) b % 4096, 0);
    memset(b, 0xa5, sizes[i]);        /* the whole length is ours (ASan) */
    hb_buf_free(b, sizes[i]);
  }
  hb_buf_trim();
}

static void test_too_large(void **state)
{
  (void) state;
  assert_null(hb_buf_alloc((64u << 20) + 1));
  hb_buf_free(NULL, 4096);            /* ignored */
}

static void test_reuse_by_class(void **state)
{
  (void) state;
  hb_buf_trim();
  void *a = hb_buf_alloc(1u << 20);
  hb_buf_free(a, 1u << 20);
  assert_int_equal(hb_buf_cached(), 1u << 20);
  /* Same class (513 KiB .. 1 MiB): the same buffer comes back. */
  void *b = hb_buf_alloc((512u << 10) + 1);
  assert_ptr_equal(a, b);
  /* Another class does not take it. */
  hb_buf_free(b, (512u << 10) + 1);
  void *c = hb_buf_alloc(4096);
  assert_ptr_not_equal(c, b);
  hb_buf_free(c, 4096);
  hb_buf_trim();
}

/* It keeps at most 64 MiB, whatever is freed. */
static void test_bounded_cache(void **state)
{
  enum { N = 65 };
  void *b[N];

  (void) state;
  hb_buf_trim();
  assert_int_equal(hb_buf_cached(), 0);
  for (int i = 0; i < N; i++)
    assert_non_null(b[i] = hb_buf_alloc(1u << 20));
  for (int i = 0; i < N; i++)
    hb_buf_free(b[i], 1u << 20);
  assert_int_equal(hb_buf_cached(), 64u << 20);
  void *x = hb_buf_alloc(1u << 20);   /* from the cache */
  assert_int_equal(hb_buf_cached(), 63u << 20);
  hb_buf_free(x, 1u << 20);
  hb_buf_trim();
  assert_int_equal(hb_buf_cached(), 0);
}

static void *churn(void *arg)
{
  unsigned seed = (unsigned) (uintptr_t) arg;

  for (int i = 0; i < 20000; i++) {
    size_t len = 1 + (size_t) rand_r(&seed) % (256u << 10);
    unsigned char *b = hb_buf_alloc(len);
    if (!b)
      return (void *) 1;
    b[0] = b[len - 1] = (unsigned char) i;
    hb_buf_free(b, len);
  }
  return NULL;
}

static void test_threads(void **state)
{
  pthread_t t[4];
  void *ret;

  (void) state;
  for (uintptr_t i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&t[i], NULL, churn, (void *) (i + 1)), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], &ret);
    assert_null(ret);
  }
  hb_buf_trim();
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_aligned_and_usable),
    cmocka_unit_test(test_too_large),
    cmocka_unit_test(test_reuse_by_class),
    cmocka_unit_test(test_bounded_cache),
    cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
