/* The device's data path on a real file under every backend and cache mode,
 * checked byte for byte against a model: unaligned reads and writes,
 * read-modify-write, trim, zero (may-trim, fast), FUA, flush, the tail of a
 * file whose size is not a multiple of the block, the allocation reported
 * for NBD block status, and the setup errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dev.h"
#include "disk.h"
#include "hablock.h"
#include "hb-build.h"
#include "loop.h"

static char dir[] = "/var/tmp/hablock-test-dev.XXXXXX";

static int setup_dir(void **state)
{
  return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static char *make_disk(const char *name, uint64_t size)
{
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t) size), 0);
  close(fd);
  return path;
}

static struct hb_dev *open_dev(const char *path, enum hb_io io, enum hb_cache cache,
                               bool write_lock)
{
  struct hb_params p = { .disk = (char *) path, .io = io, .cache = cache,
                         .write_lock = write_lock };
  struct hb_dev *d;
  char err[HB_ERRLEN];
  if (hb_dev_open(&p, &d, err, sizeof err) < 0 || hb_dev_start(d, err, sizeof err) < 0)
    fail_msg("open %s: %s", path, err);
  return d;
}

static void check_equal(struct hb_dev *d, const unsigned char *model, uint64_t size)
{
  unsigned char *back = malloc(size);
  assert_non_null(back);
  /* odd pointer: the bounce path too */
  assert_int_equal(hb_pread(d, back, (uint32_t) size, 0), 0);
  if (memcmp(back, model, size) != 0) {
    uint64_t i = 0;
    while (back[i] == model[i])
      i++;
    fail_msg("device differs from the model at byte %llu (%u != %u)",
             (unsigned long long) i, back[i], model[i]);
  }
  free(back);
}

/* hb_extents' answer, checked as it comes: contiguous from where it was
 * asked, each extent non-empty, and a hole reads as zeroes in the model. */
struct ext_walk {
  const unsigned char *model;
  uint64_t next;        /* where the next extent must start */
  unsigned n, holes;
  uint64_t first_len;
  bool first_hole;
  int fail_at;          /* return -EIO from this call (1-based), 0: never */
};

static int ext_add(void *opaque, uint64_t off, uint64_t len, bool hole)
{
  struct ext_walk *w = opaque;

  if (off != w->next || len == 0)
    fail_msg("extent [%llu, +%llu) after one ending at %llu", (unsigned long long) off,
             (unsigned long long) len, (unsigned long long) w->next);
  if (w->n == 0) {
    w->first_len = len;
    w->first_hole = hole;
  }
  w->n++;
  if (w->fail_at && w->n == (unsigned) w->fail_at)
    return -EIO;
  if (hole) {
    w->holes++;
    for (uint64_t i = off; w->model && i < off + len; i++)
      if (w->model[i])
        fail_msg("hole [%llu, +%llu) but byte %llu is %u", (unsigned long long) off,
                 (unsigned long long) len, (unsigned long long) i, w->model[i]);
  }
  w->next = off + len;
  return 0;
}

/* Walk [off, off+len) and check that the extents cover it exactly. */
static struct ext_walk walk_extents(struct hb_dev *d, const unsigned char *model,
                                    uint64_t off, uint64_t len, bool req_one)
{
  struct ext_walk w = { .model = model, .next = off };
  assert_int_equal(hb_extents(d, (uint32_t) len, off, req_one, ext_add, &w), 0);
  if (req_one)
    assert_int_equal(w.n, len ? 1 : 0);
  else
    assert_int_equal(w.next, off + len);
  return w;
}

/* The whole device, then random ranges, whole and first-only. */
static void check_extents(struct hb_dev *d, const unsigned char *model, uint64_t size)
{
  walk_extents(d, model, 0, size, false);
  for (int i = 0; i < 40; i++) {
    uint64_t off = (uint64_t) rand() % size;
    uint64_t len = 1 + (uint64_t) rand() % (size - off);
    walk_extents(d, model, off, len, rand() % 2);
  }
}

static void model_run(enum hb_io io, enum hb_cache cache, bool write_lock,
                      uint64_t size)
{
  char name[64];
  snprintf(name, sizeof name, "model-%s-%s-%llu", hb_io_name(io), hb_cache_name(cache),
           (unsigned long long) size);
  const char *path = make_disk(name, size);
  struct hb_dev *d = open_dev(path, io, cache, write_lock);
  unsigned char *model = calloc(1, size);
  unsigned char *buf = malloc(size + 1);
  assert_non_null(model);
  assert_non_null(buf);
  assert_int_equal(hb_dev_size(d), size);

  srand(777);
  for (int iter = 0; iter < 600; iter++) {
    uint64_t off = (uint64_t) rand() % size;
    uint64_t maxlen = size - off;
    uint64_t len = 1 + (uint64_t) rand() % (rand() % 3 ? 9000 : 300000);
    if (len > maxlen)
      len = maxlen;
    if (rand() % 4 == 0) {                 /* make some aligned */
      off &= ~(uint64_t) 4095;
      len = (len + 4095) & ~(uint64_t) 4095;
      if (len > size - off)
        len = size - off;
    }
    unsigned char *src = buf + (rand() % 2);   /* misaligned buffers too */
    switch (rand() % 6) {
    case 0: case 1: case 2:
      for (uint64_t k = 0; k < len; k++)
        src[k] = (unsigned char) rand();
      assert_int_equal(hb_pwrite(d, src, (uint32_t) len, off, rand() % 5 ? 0 : HB_FUA), 0);
      memcpy(model + off, src, len);
      break;
    case 3: {
      unsigned flags = (rand() % 2 ? HB_MAY_TRIM : 0) | (rand() % 3 ? 0 : HB_FUA);
      assert_int_equal(hb_zero(d, (uint32_t) len, off, flags), 0);
      memset(model + off, 0, len);
      break;
    }
    case 4: {
      /* fast zero: either done (zeroes) or refused with ENOTSUP untouched */
      int r = hb_zero(d, (uint32_t) len, off, HB_FAST_ZERO);
      assert_true(r == 0 || r == -ENOTSUP);
      if (r == 0)
        memset(model + off, 0, len);
      break;
    }
    case 5:
      assert_int_equal(hb_pread(d, src, (uint32_t) len, off), 0);
      assert_memory_equal(src, model + off, len);
      break;
    }
  }
  assert_int_equal(hb_flush(d), 0);
  check_equal(d, model, size);
  check_extents(d, model, size);

  /* trim of a regular file punches a hole: it reads back as zeroes, and
   * block status says so */
  assert_int_equal(hb_trim(d, 12288, 4096, 0), 0);
  memset(model + 4096, 0, 12288);
  check_equal(d, model, size);
  check_extents(d, model, size);
  struct ext_walk w = walk_extents(d, model, 4096, 12288, true);
  assert_true(w.first_hole);
  assert_int_equal(w.first_len, 12288);
  assert_int_equal(hb_cache(d, 4096, 0), 0);

  /* out of range */
  assert_int_equal(hb_pwrite(d, buf, 2, size - 1, 0), -EINVAL);
  assert_int_equal(hb_pread(d, buf, 1, size), -EINVAL);
  hb_dev_close(d);

  /* what was written is on the disk, read back by a fresh open */
  d = open_dev(path, HB_IO_SYNC, HB_CACHE_WRITEBACK, false);
  check_equal(d, model, size);
  hb_dev_close(d);
  free(model);
  free(buf);
}

static const enum hb_io ios[] = { HB_IO_SYNC,
#if HAVE_LIBURING
  HB_IO_URING,
#endif
#if HAVE_LIBAIO
  HB_IO_AIO,
#endif
#if HAVE_LIBURING || HAVE_LIBAIO
  HB_IO_HYBRID,
#endif
};

static void test_model_all_backends(void **state)
{
  for (size_t i = 0; i < sizeof ios / sizeof ios[0]; i++)
    for (int c = 0; c < 2; c++) {
      print_message("# io=%s cache=%s\n", hb_io_name(ios[i]), hb_cache_name((enum hb_cache) c));
      model_run(ios[i], (enum hb_cache) c, false, 1 << 20);
    }
  /* The experimental page-cache write lock (-D hablock.write_lock=1). */
  print_message("# io=sync cache=writeback write_lock\n");
  model_run(HB_IO_SYNC, HB_CACHE_WRITEBACK, true, 1 << 20);
}

static void test_odd_size_tail(void **state)
{
  /* Under O_DIRECT the last 1000 bytes are past the last whole block. */
  for (size_t i = 0; i < sizeof ios / sizeof ios[0]; i++)
    model_run(ios[i], HB_CACHE_NONE, false, (1 << 20) + 1000);
}

/* The tail goes through the page cache from the start of its page, never
 * from the last direct-I/O sector: no page is written both ways. */
static void test_tail_whole_page(void **state)
{
  static const struct { uint64_t size, dio_end; } cases[] = {
    { 10000, 8192 }, { 12288, 12288 }, { 4097, 4096 }, { 1000, 0 }, { (1 << 20) + 512, 1 << 20 },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct hb_disk disk;
    char err[HB_ERRLEN];
    const char *path = make_disk("tail", cases[i].size);
    assert_int_equal(hb_disk_open(&disk, path, true, err, sizeof err), 0);
    assert_true(disk.tail_align >= 4096 && disk.tail_align % disk.off_align == 0);
    if (disk.tail_align == 4096)
      assert_int_equal(disk.dio_end, cases[i].dio_end);
    assert_int_equal(disk.dio_end % disk.tail_align, 0);
    assert_true(disk.size - disk.dio_end < disk.tail_align);
    hb_disk_close(&disk);
  }
}

/* Writers sharing every sector of the last pages, each owning interleaved
 * 8-byte slots, under the asynchronous backends: a round's writes and
 * zeroes, then everything read back against the model. A page written
 * both through O_DIRECT and through the page cache loses acknowledged
 * writes here (the kernel then logs "Page cache invalidation failure"). */
#define SLOT 8
#define TAIL_SIZE 10000
#define TAIL_WRITERS 4

struct tail_writer {
  struct hb_dev *d;
  int id;
  unsigned seed;
  unsigned char *model;
  pthread_barrier_t *go, *done;
  int rounds;
  int err;
};

static void *tail_writer_main(void *arg)
{
  struct tail_writer *w = arg;
  const int nslots = TAIL_SIZE / SLOT;

  for (int r = 0; r < w->rounds; r++) {
    pthread_barrier_wait(w->go);
    for (int k = 0; k < 8; k++) {
      int s = (int) (rand_r(&w->seed) % (nslots / TAIL_WRITERS));
      if (rand_r(&w->seed) % 10 < 6)          /* mostly the last 40 slots */
        s = nslots / TAIL_WRITERS - 1 - s % 40;
      s = s * TAIL_WRITERS + w->id;
      unsigned char b[SLOT];
      if (rand_r(&w->seed) % 5 == 0) {
        memset(b, 0, SLOT);
        if (hb_zero(w->d, SLOT, (uint64_t) s * SLOT, 0) != 0)
          w->err = 1;
      } else {
        for (int j = 0; j < SLOT; j++)
          b[j] = (unsigned char) rand_r(&w->seed);
        if (hb_pwrite(w->d, b, SLOT, (uint64_t) s * SLOT, 0) != 0)
          w->err = 1;
      }
      memcpy(w->model + (size_t) s * SLOT, b, SLOT);
    }
    pthread_barrier_wait(w->done);
  }
  return NULL;
}

static void test_tail_shared_sectors(void **state)
{
  int rounds = getenv("HB_TEST_DEV_TAIL_ROUNDS") ? atoi(getenv("HB_TEST_DEV_TAIL_ROUNDS")) : 400;

  for (size_t i = 0; i < sizeof ios / sizeof ios[0]; i++) {
    if (ios[i] == HB_IO_SYNC)
      continue;                 /* its direct writes complete under ext4's lock */
    const char *path = make_disk("tailrace", TAIL_SIZE);
    struct hb_dev *d = open_dev(path, ios[i], HB_CACHE_NONE, false);
    unsigned char *model = calloc(1, TAIL_SIZE), *got = malloc(TAIL_SIZE);
    pthread_barrier_t go, done;
    pthread_t th[TAIL_WRITERS];
    struct tail_writer w[TAIL_WRITERS];

    assert_non_null(model);
    assert_non_null(got);
    pthread_barrier_init(&go, NULL, TAIL_WRITERS + 1);
    pthread_barrier_init(&done, NULL, TAIL_WRITERS + 1);
    for (int t = 0; t < TAIL_WRITERS; t++) {
      w[t] = (struct tail_writer) { d, t, 1234u + (unsigned) t, model, &go, &done, rounds, 0 };
      assert_int_equal(pthread_create(&th[t], NULL, tail_writer_main, &w[t]), 0);
    }
    for (int r = 0; r < rounds; r++) {
      pthread_barrier_wait(&go);
      pthread_barrier_wait(&done);
      assert_int_equal(hb_pread(d, got, TAIL_SIZE, 0), 0);
      for (size_t k = 0; k < TAIL_SIZE; k++)
        if (got[k] != model[k])
          fail_msg("io=%s round %d: byte %zu is 0x%02x, the last acknowledged write made it 0x%02x",
                   hb_io_name(ios[i]), r, k, got[k], model[k]);
    }
    for (int t = 0; t < TAIL_WRITERS; t++) {
      pthread_join(th[t], NULL);
      assert_int_equal(w[t].err, 0);
    }
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
    free(model);
    free(got);
    hb_dev_close(d);
  }
}

struct writer {
  struct hb_dev *d;
  int id;
};

/* Concurrent unaligned writers sharing blocks: read-modify-write must not
 * lose a neighbour's bytes. Each writer owns every 4th byte range of 1000. */
static void *writer_main(void *arg)
{
  struct writer *w = arg;
  unsigned char b[1000];
  memset(b, 'A' + w->id, sizeof b);
  for (int k = w->id; k < 1000; k += 4)
    if (hb_pwrite(w->d, b, sizeof b, (uint64_t) k * 1000, 0) != 0)
      return (void *) 1;
  return NULL;
}

static void test_concurrent_rmw(void **state)
{
  for (size_t i = 0; i < sizeof ios / sizeof ios[0]; i++) {
    const char *path = make_disk("rmw", 1000 * 1000);
    struct hb_dev *d = open_dev(path, ios[i], HB_CACHE_NONE, false);
    pthread_t th[4];
    struct writer w[4];
    for (int t = 0; t < 4; t++) {
      w[t] = (struct writer) { d, t };
      assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
      void *ret;
      pthread_join(th[t], &ret);
      assert_null(ret);
    }
    unsigned char *model = malloc(1000 * 1000);
    for (int k = 0; k < 1000; k++)
      memset(model + k * 1000, 'A' + k % 4, 1000);
    check_equal(d, model, 1000 * 1000);
    free(model);
    hb_dev_close(d);
  }
}

/* The same with zeroes and trims among the writes (found missing in
 * review): 700-byte chunks, so that neighbours share 512-byte sectors and
 * 4 KiB pages; each thread owns every 4th chunk and keeps its own part of
 * the model. A zero, with or without may-trim, reads back zeroes; what a
 * trim leaves is unspecified, so a trimmed chunk is not compared until it
 * is written or zeroed again. Every other byte must be exact: a partial
 * block written, zeroed or punched must not take a neighbour's bytes. */
#define MIX_CHUNK 700
#define MIX_CHUNKS 2000
#define MIX_OPS 1200

struct mixer {
  struct hb_dev *d;
  int id;
  unsigned char *model, *known;
  int err;
};

static void *mixer_main(void *arg)
{
  struct mixer *m = arg;
  unsigned seed = (unsigned) m->id * 7919u + 1;
  unsigned char b[MIX_CHUNK];

  for (int it = 0; it < MIX_OPS && !m->err; it++) {
    int k = (int) (rand_r(&seed) % (MIX_CHUNKS / 4)) * 4 + m->id;
    uint64_t off = (uint64_t) k * MIX_CHUNK;
    int op = (int) (rand_r(&seed) % 5);
    int r;

    if (op < 2) {
      memset(b, (int) (rand_r(&seed) & 0xff), sizeof b);
      r = hb_pwrite(m->d, b, MIX_CHUNK, off, op == 1 ? HB_FUA : 0);
      memcpy(m->model + off, b, MIX_CHUNK);
      m->known[k] = 1;
    } else if (op < 4) {
      r = hb_zero(m->d, MIX_CHUNK, off, op == 3 ? HB_MAY_TRIM : 0);
      memset(m->model + off, 0, MIX_CHUNK);
      m->known[k] = 1;
    } else {
      r = hb_trim(m->d, MIX_CHUNK, off, 0);
      m->known[k] = 0;
    }
    if (r != 0)
      m->err = r;
  }
  return NULL;
}

static void test_concurrent_rmw_zero_trim(void **state)
{
  const uint64_t size = (uint64_t) MIX_CHUNK * MIX_CHUNKS;

  for (size_t i = 0; i < sizeof ios / sizeof ios[0]; i++) {
    const char *path = make_disk("mix", size);
    struct hb_dev *d = open_dev(path, ios[i], HB_CACHE_NONE, false);
    unsigned char *model = calloc(1, size), *known = malloc(MIX_CHUNKS), *back = malloc(size);
    struct mixer m[4];
    pthread_t th[4];
    uint64_t bad = 0;

    assert_non_null(model);
    assert_non_null(known);
    assert_non_null(back);
    memset(known, 1, MIX_CHUNKS);         /* a new disk reads zeroes */
    for (int t = 0; t < 4; t++) {
      m[t] = (struct mixer) { d, t, model, known, 0 };
      assert_int_equal(pthread_create(&th[t], NULL, mixer_main, &m[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
      pthread_join(th[t], NULL);
      assert_int_equal(m[t].err, 0);
    }
    assert_int_equal(hb_pread(d, back, size, 0), 0);
    for (uint64_t o = 0; o < size; o++)
      if (known[o / MIX_CHUNK] && back[o] != model[o])
        bad++;
    if (bad)
      fail_msg("io=%s: %llu bytes differ from the model", hb_io_name(ios[i]),
               (unsigned long long) bad);
    free(model);
    free(known);
    free(back);
    hb_dev_close(d);
  }
}

/* io=hybrid: writers that meet hand their writes to the loop, and every
 * write lands (plain and FUA), under both cache modes, on libaio's loop
 * (io_uring's where no libaio context can be made). Each writer reads its own blocks
 * back after every pass (nobody else writes them), so a write lost in any
 * pass is caught. Writers keep going until some writes have met (a
 * deadline of 10 s), so the loop's path is exercised, not just hoped
 * for. */
#define HYB_THREADS 8
#define HYB_BLOCKS 64           /* per thread, 4 KiB each */

struct hyb_writer {
  struct hb_dev *d;
  int id;
  unsigned rounds;              /* out: full passes written */
  int err;
};

static bool hyb_stop;

static void *hyb_main(void *arg)
{
  struct hyb_writer *w = arg;
  unsigned char b[4096], got[4096];

  do {
    for (int k = 0; k < HYB_BLOCKS; k++) {
      uint64_t blk = (uint64_t) k * HYB_THREADS + (uint64_t) w->id;
      memset(b, (int) (w->rounds * 31 + blk) & 0xff, sizeof b);
      if (hb_pwrite(w->d, b, sizeof b, blk * 4096, k % 16 == 0 ? HB_FUA : 0) != 0)
        w->err = 1;
    }
    for (int k = 0; k < HYB_BLOCKS && !w->err; k++) {
      uint64_t blk = (uint64_t) k * HYB_THREADS + (uint64_t) w->id;
      memset(b, (int) (w->rounds * 31 + blk) & 0xff, sizeof b);
      if (hb_pread(w->d, got, sizeof got, blk * 4096) != 0 || memcmp(got, b, sizeof b) != 0)
        w->err = 2;
    }
    w->rounds++;
  } while (!w->err && !__atomic_load_n(&hyb_stop, __ATOMIC_ACQUIRE));
  return NULL;
}

static void hybrid_run(enum hb_cache cache)
{
  const uint64_t size = (uint64_t) HYB_THREADS * HYB_BLOCKS * 4096;
  const char *path = make_disk("hybrid", size);
  struct hb_params p = { .disk = (char *) path, .io = HB_IO_HYBRID, .cache = cache };
  struct hb_dev *d;
  char err[HB_ERRLEN];
  pthread_t th[HYB_THREADS];
  struct hyb_writer w[HYB_THREADS];
  uint64_t deadline = hb_now_ns() + 10000000000ull;
  /* libaio's loop, or io_uring's where no libaio context can be made */
  const char *loop = hb_loop_probe(HB_LOOP_AIO, 8, err, sizeof err) == 0 ? "aio" : "uring";

  print_message("# io=hybrid cache=%s loop=%s\n", hb_cache_name(cache), loop);
  if (hb_dev_open(&p, &d, err, sizeof err) < 0 || hb_dev_start(d, err, sizeof err) < 0)
    fail_msg("open %s: %s", path, err);
  assert_int_equal(hb_dev_io(d), HB_IO_HYBRID);
  assert_string_equal(hb_dev_loop_name(d), loop);
  hyb_stop = false;
  for (int t = 0; t < HYB_THREADS; t++) {
    w[t] = (struct hyb_writer) { d, t, 0, 0 };
    assert_int_equal(pthread_create(&th[t], NULL, hyb_main, &w[t]), 0);
  }
  while (hb_dev_hybrid_handed(d) < 100 && hb_now_ns() < deadline)
    usleep(1000);
  __atomic_store_n(&hyb_stop, true, __ATOMIC_RELEASE);
  for (int t = 0; t < HYB_THREADS; t++) {
    pthread_join(th[t], NULL);
    if (w[t].err)
      fail_msg("io=hybrid cache=%s writer %d pass %u: %s", hb_cache_name(cache), t,
               w[t].rounds, w[t].err == 1 ? "a write failed" : "a block read back differs");
  }
  if (hb_dev_hybrid_handed(d) < 100)
    fail_msg("io=hybrid: only %lu writes met another in 10 s", hb_dev_hybrid_handed(d));

  unsigned char *model = malloc(size);
  assert_non_null(model);
  for (int t = 0; t < HYB_THREADS; t++)
    for (int k = 0; k < HYB_BLOCKS; k++) {
      uint64_t blk = (uint64_t) k * HYB_THREADS + (uint64_t) t;
      memset(model + blk * 4096, (int) ((w[t].rounds - 1) * 31 + blk) & 0xff, 4096);
    }
  check_equal(d, model, size);
  hb_dev_close(d);
  /* and through a fresh open */
  d = open_dev(path, HB_IO_SYNC, HB_CACHE_NONE, false);
  check_equal(d, model, size);
  hb_dev_close(d);
  free(model);
}

static void test_hybrid_contended(void **state)
{
#if HAVE_LIBURING || HAVE_LIBAIO
  hybrid_run(HB_CACHE_WRITEBACK);
  hybrid_run(HB_CACHE_NONE);
#endif
}

/* Block status on a sparse file, exactly: holes and data where they are,
 * the first extent alone (REQ_ONE), a range that starts inside an extent,
 * a punched hole, an error from the consumer, out of range, and at most
 * 1024 extents per call. Exact boundaries need a file system that
 * allocates 4 KiB blocks (ext4, XFS, tmpfs here); elsewhere this says so
 * and checks nothing. */
static void test_extents(void **state)
{
  const uint64_t size = 8 << 20, a = 1 << 20, b = (5 << 20) + 4096;
  struct stat st;
  assert_int_equal(stat(dir, &st), 0);
  if (st.st_blksize != 4096) {
    print_message("# %s has %ld-byte blocks: exact extents not checked\n", dir,
                  (long) st.st_blksize);
    return;
  }
  for (int c = 0; c < 2; c++) {
    enum hb_cache cache = (enum hb_cache) c;
    print_message("# cache=%s\n", hb_cache_name(cache));
    struct hb_dev *d = open_dev(make_disk("sparse", size), HB_IO_SYNC, cache, false);
    unsigned char *model = calloc(1, size);
    unsigned char *buf = aligned_alloc(4096, 8192);
    assert_non_null(model);
    assert_non_null(buf);
    assert_true(hb_dev_can_extents(d));

    /* a fresh file is one hole */
    struct ext_walk w = walk_extents(d, model, 0, size, false);
    assert_int_equal(w.n, 1);
    assert_int_equal(w.holes, 1);

    memset(buf, 0x5a, 8192);
    assert_int_equal(hb_pwrite(d, buf, 4096, a, 0), 0);
    assert_int_equal(hb_pwrite(d, buf, 8192, b, 0), 0);
    memset(model + a, 0x5a, 4096);
    memset(model + b, 0x5a, 8192);
    const struct { uint64_t off, len; bool hole; } want[] = {
      { 0, a, true }, { a, 4096, false }, { a + 4096, b - a - 4096, true },
      { b, 8192, false }, { b + 8192, size - b - 8192, true },
    };
    uint64_t pos = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
      w = walk_extents(d, model, pos, size - pos, true);
      assert_int_equal(w.first_len, want[i].len);
      assert_int_equal(w.first_hole, want[i].hole);
      pos += want[i].len;
    }
    w = walk_extents(d, model, 0, size, false);
    assert_int_equal(w.n, 5);
    assert_int_equal(w.holes, 3);
    /* from inside a hole, and inside data: clipped to the request */
    w = walk_extents(d, model, 100, 50, false);
    assert_true(w.first_hole && w.n == 1 && w.first_len == 50);
    w = walk_extents(d, model, b + 100, 9000, false);
    assert_false(w.first_hole);
    assert_int_equal(w.first_len, 8092);
    assert_int_equal(w.n, 2);

    /* trimmed, the data is a hole again */
    assert_int_equal(hb_trim(d, 4096, a, 0), 0);
    memset(model + a, 0, 4096);
    w = walk_extents(d, model, 0, b, true);
    assert_true(w.first_hole);
    assert_int_equal(w.first_len, b);

    /* the consumer's error stops the walk and is returned */
    w = (struct ext_walk) { .model = model, .fail_at = 2 };
    assert_int_equal(hb_extents(d, (uint32_t) size, 0, false, ext_add, &w), -EIO);
    assert_int_equal(w.n, 2);
    assert_int_equal(hb_extents(d, 2, size - 1, false, ext_add, &w), -EINVAL);

    /* 2048 extents (4 KiB of data every 8 KiB of the first 8 MiB): one
     * call reports the first 1024, contiguous, and a second goes on */
    for (uint64_t off = 0; off < size; off += 8192)
      assert_int_equal(hb_pwrite(d, buf, 4096, off, 0), 0);
    w = (struct ext_walk) { .next = 0 };
    assert_int_equal(hb_extents(d, (uint32_t) size, 0, false, ext_add, &w), 0);
    assert_int_equal(w.n, 1024);
    assert_int_equal(w.next, 512 * 8192);
    assert_int_equal(w.holes, 512);
    uint64_t from = w.next;
    w = (struct ext_walk) { .next = from };
    assert_int_equal(hb_extents(d, (uint32_t) (size - from), from, false, ext_add, &w), 0);
    assert_int_equal(w.next, size);
    free(model);
    free(buf);
    hb_dev_close(d);
  }
}

/* The defaults: io=hybrid through the page cache (where a loop can be
 * made: io=sync otherwise), io=sync with O_DIRECT (the fastest in
 * docs/benchmarks.md), and io=sync for the write-lock experiment. */
static void test_default_backend(void **state)
{
  const enum hb_io wb = HAVE_LIBURING || HAVE_LIBAIO ? HB_IO_HYBRID : HB_IO_SYNC;
  const struct { enum hb_cache cache; bool write_lock; enum hb_io io; } rows[] = {
    { HB_CACHE_WRITEBACK, false, wb }, { HB_CACHE_NONE, false, HB_IO_SYNC },
    { HB_CACHE_WRITEBACK, true, HB_IO_SYNC },
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    struct hb_dev *d = open_dev(make_disk("default", 1 << 20), HB_IO_DEFAULT,
                                rows[i].cache, rows[i].write_lock);
    assert_int_equal(hb_dev_io(d), rows[i].io);
    hb_dev_close(d);
  }
}

static void test_setup_errors(void **state)
{
  struct {
    const char *disk;
    enum hb_cache cache;
    int err;
    const char *msg;     /* a substring of the one-line message */
  } rows[] = {
    { "/nonexistent/disk.img", HB_CACHE_NONE, -ENOENT, "disk /nonexistent/disk.img: No such file or directory" },
    { "/var/tmp", HB_CACHE_NONE, -EISDIR, "is a directory" },
    { "/dev/null", HB_CACHE_WRITEBACK, -EINVAL, "not a regular file or block device" },
    { NULL, HB_CACHE_NONE, -EINVAL, "size 0" },
  };
  char *empty = strdup(make_disk("empty", 0));
  rows[3].disk = empty;
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    struct hb_params p = { .disk = (char *) rows[i].disk, .cache = rows[i].cache };
    struct hb_dev *d = NULL;
    char err[HB_ERRLEN] = "";
    assert_int_equal(hb_dev_open(&p, &d, err, sizeof err), rows[i].err);
    if (!strstr(err, rows[i].msg))
      fail_msg("row %zu: '%s' does not say '%s'", i, err, rows[i].msg);
    assert_null(strchr(err, '\n'));
  }
  free(empty);
}

static void test_params(void **state)
{
  struct {
    const char *key, *value;
    int ret;
    const char *msg;
  } rows[] = {
    { "disk", "/a", 0, "" },
    { "disk", "/b", -EINVAL, "disk= given twice ('/a' and '/b')" },
    { "io", "sync", 0, "" },
    { "io", "aio", -EINVAL, "io= given twice" },
    { "cache", "none", 0, "" },
    { "cache", "writeback", -EINVAL, "cache= given twice" },
    { "queue-depth", "64", 0, "" },
    { "queue-depth", "64", -EINVAL, "queue-depth= given twice" },
    { "colour", "blue", -EINVAL, "unknown parameter 'colour'" },
  };
  struct hb_params p = { 0 };
  char err[HB_ERRLEN];

  assert_int_equal(hb_params_check(&p, err, sizeof err), -EINVAL);
  assert_string_equal(err, "missing parameter: disk=<FILENAME> or config=<FILE>");
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    err[0] = 0;
    assert_int_equal(hb_params_set(&p, rows[i].key, rows[i].value, err, sizeof err), rows[i].ret);
    assert_string_equal(err, rows[i].msg);
  }
  assert_int_equal(hb_params_check(&p, err, sizeof err), 0);
  /* Bad values, each alone. */
  static const struct { const char *key, *value, *msg; } bad[] = {
    { "io", "fast", "io=fast: unknown I/O backend (expected sync, uring, aio or hybrid)" },
    { "cache", "unsafe", "cache=unsafe: unknown cache mode (expected none or writeback)" },
    { "queue-depth", "0", "queue-depth=0: expected a whole number from 1 to 4096" },
    { "queue-depth", "12x", "queue-depth=12x: expected a whole number from 1 to 4096" },
    { "queue-depth", "-1", "queue-depth=-1: expected a whole number from 1 to 4096" },
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct hb_params q = { 0 };
    err[0] = 0;
    assert_int_equal(hb_params_set(&q, bad[i].key, bad[i].value, err, sizeof err), -EINVAL);
    assert_string_equal(err, bad[i].msg);
  }
  assert_string_equal(p.disk, "/a");
  assert_int_equal(p.io, HB_IO_SYNC);
  assert_int_equal(p.cache, HB_CACHE_NONE);
  assert_int_equal(p.queue_depth, 64);
  hb_params_free(&p);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_params),
    cmocka_unit_test(test_setup_errors),
    cmocka_unit_test(test_model_all_backends),
    cmocka_unit_test(test_odd_size_tail),
    cmocka_unit_test(test_tail_whole_page),
    cmocka_unit_test(test_tail_shared_sectors),
    cmocka_unit_test(test_concurrent_rmw),
    cmocka_unit_test(test_concurrent_rmw_zero_trim),
    cmocka_unit_test(test_hybrid_contended),
    cmocka_unit_test(test_default_backend),
    cmocka_unit_test(test_extents),
  };
  return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
