/* The device: the backing disk, the chosen local I/O backend and the write
 * path's conflict check, behind the public hb_* data-path calls.
 *
 * Every request is carried out by the nbdkit worker that received it; with
 * io=sync the worker does its own syscalls (no thread hop), with io=uring and
 * io=aio it hands each I/O to the loop thread and waits, and with io=hybrid
 * it does its own syscalls except for a write that finds another write in
 * progress, which it hands to the loop thread. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "align.h"
#include "dev.h"
#include "disk.h"
#include "hablock.h"
#include "hb-build.h"
#include "inflight.h"
#include "log.h"
#include "loop.h"
#include "wlock.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

/* The default backend per cache mode: the fastest in docs/benchmarks.md. */
#define DEFAULT_IO_DIRECT    HB_IO_SYNC
#define DEFAULT_IO_WRITEBACK HB_IO_HYBRID
#define DEFAULT_QUEUE_DEPTH  128u
/* Block status: at most this many extents per request (a client may be
 * given fewer than it asked for, and a badly fragmented file would
 * otherwise cost one lseek pair per extent of a 4 GiB range). */
#define EXTENTS_MAX 1024u
/* Unaligned direct I/O goes through a per-thread bounce buffer this big. */
#define BOUNCE_MAX (1u << 20)

struct hb_dev {
  struct hb_disk disk;
  enum hb_io io;
  enum hb_cache cache;
  unsigned depth;
  enum hb_loop_kind loop_kind;  /* io=uring, aio, hybrid: the loop's */
  struct hb_loop *loop;
  /* io=hybrid: writes in progress, by workers or through the loop. A
   * write that finds none is done by its worker (no thread hop at low
   * depth); one that finds another goes to the loop: page-cache writes to
   * a file run one at a time in the kernel (the inode's lock), and rather
   * than wait for that lock in a worker (spinning on its owner, then a
   * wake-up per hand-over), it waits in the loop's queue, and the loop
   * thread carries the queued writes out one after the other (see
   * choose_loop; docs/architecture.md has the figures). */
  int writes_active;
  unsigned long hybrid_handed;  /* writes that went to the loop (tests) */
  struct hb_inflight inflight;
  void *zeroes;                 /* BOUNCE_MAX zero bytes, aligned */
  /* Page-cache writes to a regular file take the inode's lock exclusively
   * in the kernel, so only one runs at a time whatever we do; waiting for
   * it, the others spin on the lock's owner (rwsem optimistic spinning),
   * burning the CPU that nbdkit's other workers and the client need. With
   * -D hablock.write_lock=1 they sleep on this lock instead (wlock.h): an
   * experiment, off by default (docs/architecture.md has why). */
  bool write_lock_on;
  struct hb_wlock write_lock;
  bool can_extents;             /* a regular file: SEEK_DATA and SEEK_HOLE */
};

/* ---- per-thread bounce buffers (nbdkit workers come and go with
 * connections: the key's destructor frees a finished thread's buffer) ---- */

static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;

static void bounce_key_init(void)
{
  if (pthread_key_create(&bounce_key, free))
    abort();
}

static char *bounce_buffer(void)
{
  void *p;

  pthread_once(&bounce_once, bounce_key_init);
  p = pthread_getspecific(bounce_key);
  if (!p) {
    /* 4096 satisfies every O_DIRECT memory alignment we accept. */
    if (posix_memalign(&p, 4096, BOUNCE_MAX))
      return NULL;
    if (pthread_setspecific(bounce_key, p)) {
      free(p);
      return NULL;
    }
  }
  return p;
}

/* ---- setup ---- */

static int probe_uring(const struct hb_dev *d, const struct hb_params *p, char *why,
                       size_t whylen)
{
  if (p->force_no_loop)
    return hb_fail(why, whylen, ENOSYS, "forced by hablock.force_no_loop");
  return p->force_aio_fallback
           ? hb_fail(why, whylen, ENOSYS, "forced by hablock.force_aio_fallback")
           : hb_loop_probe(HB_LOOP_URING, d->depth, why, whylen);
}

static int probe_aio(const struct hb_dev *d, const struct hb_params *p, char *why,
                     size_t whylen)
{
  return p->force_no_loop ? hb_fail(why, whylen, ENOSYS, "forced by hablock.force_no_loop")
                          : hb_loop_probe(HB_LOOP_AIO, d->depth, why, whylen);
}

/* The loop of io=uring, aio or hybrid, with one log line when it is not
 * the preferred one. io=uring: io_uring, else libaio (io=uring then
 * becomes io=aio). io=aio: libaio. io=hybrid: libaio, else io_uring: its
 * loop is there for page-cache writes that meet, and libaio carries out a
 * buffered write inside io_submit, on the loop thread itself, where
 * io_uring hands an ext4 buffered write to a kernel worker, one thread hop
 * more (docs/architecture.md has the figures). 0, or -errno with why
 * filled. */
static int choose_loop(struct hb_dev *d, const struct hb_params *p, char *why,
                       size_t whylen)
{
  char uwhy[HB_ERRLEN] = "not tried", awhy[HB_ERRLEN] = "not tried";
  int ru = 0, ra = 0;

  switch (d->io) {
  case HB_IO_URING:
    if ((ru = probe_uring(d, p, uwhy, sizeof uwhy)) == 0) {
      d->loop_kind = HB_LOOP_URING;
      return 0;
    }
    if ((ra = probe_aio(d, p, awhy, sizeof awhy)) == 0) {
      hb_info("io=uring: cannot create an io_uring ring (%s); falling back to aio", uwhy);
      d->io = HB_IO_AIO;
      d->loop_kind = HB_LOOP_AIO;
      return 0;
    }
    break;
  case HB_IO_AIO:
    if ((ra = probe_aio(d, p, awhy, sizeof awhy)) == 0) {
      d->loop_kind = HB_LOOP_AIO;
      return 0;
    }
    return hb_fail(why, whylen, -ra, "cannot create a libaio context (%s)", awhy);
  default:                      /* io=hybrid */
    if ((ra = probe_aio(d, p, awhy, sizeof awhy)) == 0) {
      d->loop_kind = HB_LOOP_AIO;
      return 0;
    }
    if ((ru = probe_uring(d, p, uwhy, sizeof uwhy)) == 0) {
      if (HAVE_LIBAIO)
        hb_info("io=hybrid: cannot create a libaio context (%s); using io_uring", awhy);
      d->loop_kind = HB_LOOP_URING;
      return 0;
    }
    break;
  }
  return hb_fail(why, whylen, ra ? -ra : -ru,
                 "cannot create an io_uring ring (%s), nor a libaio context (%s)", uwhy, awhy);
}

int hb_dev_open(const struct hb_params *p, struct hb_dev **out,
                char *err, size_t errlen)
{
  struct hb_dev *d;
  char why[HB_ERRLEN];
  int r;

  d = calloc(1, sizeof *d);
  if (!d)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  d->cache = p->cache;
  d->depth = p->queue_depth ? p->queue_depth : DEFAULT_QUEUE_DEPTH;
  r = hb_disk_open(&d->disk, p->disk, p->cache == HB_CACHE_NONE, err, errlen);
  if (r < 0) {
    free(d);
    return r;
  }
  /* Before the first hb_dev_close(): it destroys these. */
  hb_inflight_init(&d->inflight, d->disk.direct ? d->disk.off_align : 1);
  hb_wlock_init(&d->write_lock);
  d->write_lock_on = !d->disk.direct && !d->disk.is_blk && p->write_lock;
  if (posix_memalign(&d->zeroes, 4096, BOUNCE_MAX)) {
    hb_dev_close(d);
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  }
  memset(d->zeroes, 0, BOUNCE_MAX);

  d->io = p->io;
  if (d->io == HB_IO_DEFAULT)
    d->io = p->cache == HB_CACHE_NONE ? DEFAULT_IO_DIRECT : DEFAULT_IO_WRITEBACK;
  /* The write-lock experiment is about the workers' own writes: io=sync. */
  if (p->io == HB_IO_DEFAULT && d->write_lock_on)
    d->io = HB_IO_SYNC;
  if (d->io != HB_IO_SYNC && (r = choose_loop(d, p, why, sizeof why)) < 0) {
    if (p->io != HB_IO_DEFAULT) {
      hb_fail(err, errlen, -r, "io=%s: %s", hb_io_name(d->io), why);
      hb_dev_close(d);
      return r;
    }
    /* io=hybrid is only a way to be faster: the default goes on without. */
    hb_info("io=%s (the default for cache=writeback): %s; using io=sync",
            hb_io_name(d->io), why);
    d->io = HB_IO_SYNC;
  }

  /* Allocation is a file's: a block device reads as all data (nbdkit's
   * own answer when a plugin has no extents). Every file system answers
   * SEEK_DATA (one without holes: all data), so this fails only on a
   * file that lseek cannot seek. */
  if (!d->disk.is_blk) {
    off_t o = lseek(d->disk.fd, 0, SEEK_DATA);
    d->can_extents = o >= 0 || errno == ENXIO;
    if (!d->can_extents)
      hb_debug("disk %s: lseek(SEEK_DATA): %m; no extents", d->disk.path);
  }

  /* We serve a device that may be mounted on this very host: our own
   * allocations must not recurse into writeback of that device. Needs
   * CAP_SYS_RESOURCE; without it we go on and say so. */
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
    hb_debug("prctl(PR_SET_IO_FLUSHER): %m (continuing)");

  hb_debug("disk %s: %s, size %llu, %s, alignment mem %u off %u, io=%s",
           d->disk.path, d->disk.is_blk ? "block device" : "file",
           (unsigned long long) d->disk.size,
           d->disk.direct ? "O_DIRECT" : "page cache",
           d->disk.mem_align, d->disk.off_align, hb_io_name(d->io));
  *out = d;
  return 0;
}

int hb_dev_start(struct hb_dev *d, char *err, size_t errlen)
{
  if (d->io == HB_IO_SYNC || d->loop)
    return 0;
  return hb_loop_start(d->loop_kind, d->depth, &d->loop, err, errlen);
}

void hb_dev_close(struct hb_dev *d)
{
  if (!d)
    return;
  hb_loop_stop(d->loop);
  hb_inflight_destroy(&d->inflight);
  hb_wlock_destroy(&d->write_lock);
  hb_disk_close(&d->disk);
  free(d->zeroes);
  free(d);
}

uint64_t hb_dev_size(const struct hb_dev *d) { return d->disk.size; }
const char *hb_dev_loop_name(const struct hb_dev *d) { return d->loop ? d->loop->ops->name : ""; }
unsigned long hb_dev_hybrid_handed(const struct hb_dev *d)
{
  return __atomic_load_n(&d->hybrid_handed, __ATOMIC_RELAXED);
}
enum hb_io hb_dev_io(const struct hb_dev *d) { return d->io; }
bool hb_dev_can_trim(const struct hb_dev *d) { (void) d; return true; }
bool hb_dev_can_fast_zero(const struct hb_dev *d) { (void) d; return true; }
bool hb_dev_can_extents(const struct hb_dev *d) { return d->can_extents; }
bool hb_dev_is_rotational(const struct hb_dev *d) { return d->disk.rotational; }

uint32_t hb_dev_preferred_block(const struct hb_dev *d)
{
  return d->disk.off_align > 4096 ? d->disk.off_align : 4096;
}

/* ---- one I/O through the chosen backend ---- */

/* io=hybrid: a write by this worker, or through the loop when another
 * write is in progress. A synchronous write (FUA) stays with its worker:
 * in the kernel's one-at-a-time lane it would hold up the others for the
 * disk's flush. */
static int hybrid_write(struct hb_dev *d, void *buf, uint64_t len, uint64_t off,
                        int rwflags)
{
  int r;

  if (__atomic_fetch_add(&d->writes_active, 1, __ATOMIC_RELAXED) == 0 ||
      (rwflags & RWF_DSYNC) || !d->loop) {
    r = hb_pwrite_full(d->disk.fd, buf, len, off, rwflags);
  } else {
    struct hb_req req = {
      .op = HB_OP_WRITE, .fd = d->disk.fd, .buf = buf, .len = len, .off = off,
      .rw_flags = rwflags,
    };
    __atomic_fetch_add(&d->hybrid_handed, 1, __ATOMIC_RELAXED);
    r = hb_loop_run(d->loop, &req);
  }
  __atomic_fetch_sub(&d->writes_active, 1, __ATOMIC_RELAXED);
  return r;
}

/* Whether op goes through the loop thread: every op its engine can carry
 * with io=uring and io=aio; with io=hybrid only contended writes do
 * (hybrid_write), everything else is the worker's own syscall. */
static bool loop_takes(const struct hb_dev *d, enum hb_op op)
{
  return d->io != HB_IO_HYBRID && d->loop && hb_loop_can(d->loop, op);
}

static int io_rw(struct hb_dev *d, enum hb_op op, void *buf, uint64_t len,
                 uint64_t off, int rwflags)
{
  if (d->io == HB_IO_HYBRID && op == HB_OP_WRITE)
    return hybrid_write(d, buf, len, off, rwflags);
  if (loop_takes(d, op)) {
    struct hb_req req = {
      .op = op, .fd = d->disk.fd, .buf = buf, .len = len, .off = off,
      .rw_flags = rwflags,
    };
    return hb_loop_run(d->loop, &req);
  }
  if (op == HB_OP_READ)
    return hb_pread_full(d->disk.fd, buf, len, off);
  /* A synchronous write (FUA) waits for the disk after the kernel has
   * dropped the inode lock: it must not hold up the others' writes. */
  if (d->write_lock_on && !(rwflags & RWF_DSYNC)) {
    int r;

    hb_wlock_lock(&d->write_lock);
    r = hb_pwrite_full(d->disk.fd, buf, len, off, rwflags);
    hb_wlock_unlock(&d->write_lock);
    return r;
  }
  return hb_pwrite_full(d->disk.fd, buf, len, off, rwflags);
}

static int io_fallocate(struct hb_dev *d, int mode, uint64_t off, uint64_t len)
{
  if (loop_takes(d, HB_OP_FALLOCATE)) {
    struct hb_req req = {
      .op = HB_OP_FALLOCATE, .fd = d->disk.fd, .mode = mode, .off = off, .len = len,
    };
    return hb_loop_run(d->loop, &req);
  }
  return hb_disk_fallocate(&d->disk, mode, off, len);
}

static int io_flush(struct hb_dev *d)
{
  if (loop_takes(d, HB_OP_FDATASYNC)) {
    struct hb_req req = { .op = HB_OP_FDATASYNC, .fd = d->disk.fd };
    return hb_loop_run(d->loop, &req);
  }
  return fdatasync(d->disk.fd) < 0 ? -errno : 0;
}

/* ---- reads and writes, aligned for O_DIRECT where needed ---- */

static int read_direct(struct hb_dev *d, char *buf, uint64_t len, uint64_t off)
{
  uint32_t align = d->disk.off_align;
  struct hb_chunk c;
  char *bounce;
  int r;

  if (hb_direct_ok(buf, off, len, d->disk.mem_align, align))
    return io_rw(d, HB_OP_READ, buf, len, off, 0);
  if (!(bounce = bounce_buffer()))
    return -ENOMEM;
  for (uint64_t pos = hb_align_down(off, align);
       (r = hb_chunk_next(off, len, align, BOUNCE_MAX, pos, &c)) > 0; pos += c.len) {
    r = io_rw(d, HB_OP_READ, bounce, c.len, c.off, 0);
    if (r < 0)
      return r;
    memcpy(buf + c.src, bounce + c.data_off, c.data_len);
  }
  return r;
}

/* Called with the range registered in d->inflight: a partial block's
 * read-modify-write cannot race another write of that block. */
static int write_direct(struct hb_dev *d, const char *buf, uint64_t len,
                        uint64_t off, int rwflags)
{
  uint32_t align = d->disk.off_align;
  struct hb_chunk c;
  char *bounce;
  int r;

  if (hb_direct_ok(buf, off, len, d->disk.mem_align, align))
    return io_rw(d, HB_OP_WRITE, (char *) buf, len, off, rwflags);
  if (!(bounce = bounce_buffer()))
    return -ENOMEM;
  for (uint64_t pos = hb_align_down(off, align);
       (r = hb_chunk_next(off, len, align, BOUNCE_MAX, pos, &c)) > 0; pos += c.len) {
    if (c.read_first && (r = io_rw(d, HB_OP_READ, bounce, align, c.off, 0)) < 0)
      return r;
    if (c.read_last &&
        (r = io_rw(d, HB_OP_READ, bounce + c.len - align, align, c.off + c.len - align, 0)) < 0)
      return r;
    memcpy(bounce + c.data_off, buf + c.src, c.data_len);
    r = io_rw(d, HB_OP_WRITE, bounce, c.len, c.off, rwflags);
    if (r < 0)
      return r;
  }
  return r;
}

/* Under O_DIRECT a file whose size is not a multiple of the alignment has a
 * tail no aligned request can reach: it goes through the page-cache
 * descriptor. Returns how many of the len bytes at off lie before it. */
static uint64_t direct_part(const struct hb_dev *d, uint64_t len, uint64_t off)
{
  if (off >= d->disk.dio_end)
    return 0;
  return len < d->disk.dio_end - off ? len : d->disk.dio_end - off;
}

static int read_range(struct hb_dev *d, char *buf, uint64_t len, uint64_t off)
{
  uint64_t head;
  int r;

  if (!d->disk.direct)
    return io_rw(d, HB_OP_READ, buf, len, off, 0);
  head = direct_part(d, len, off);
  if (head && (r = read_direct(d, buf, head, off)) < 0)
    return r;
  if (head < len)
    return hb_pread_full(d->disk.fd_buf, buf + head, len - head, off + head);
  return 0;
}

static int write_range(struct hb_dev *d, const char *buf, uint64_t len,
                       uint64_t off, int rwflags)
{
  uint64_t head;
  int r;

  if (!d->disk.direct)
    return io_rw(d, HB_OP_WRITE, (char *) buf, len, off, rwflags);
  head = direct_part(d, len, off);
  if (head && (r = write_direct(d, buf, head, off, rwflags)) < 0)
    return r;
  if (head < len)
    return hb_pwrite_full(d->disk.fd_buf, buf + head, len - head, off + head, rwflags);
  return 0;
}

static int write_zeroes(struct hb_dev *d, uint64_t len, uint64_t off, int rwflags)
{
  while (len) {
    uint64_t n = len < BOUNCE_MAX ? len : BOUNCE_MAX;
    int r = write_range(d, d->zeroes, n, off, rwflags);
    if (r < 0)
      return r;
    off += n;
    len -= n;
  }
  return 0;
}

static bool in_bounds(const struct hb_dev *d, uint64_t len, uint64_t off)
{
  return off <= d->disk.size && len <= d->disk.size - off;
}

/* ---- the data path ---- */

int hb_pread(struct hb_dev *d, void *buf, uint32_t count, uint64_t off)
{
  if (!in_bounds(d, count, off))
    return -EINVAL;
  if (count == 0)
    return 0;
  return read_range(d, buf, count, off);
}

int hb_dev_write_now(const struct hb_req *req)
{
  return hb_pwrite_full(req->fd, req->buf, req->len, req->off, req->rw_flags);
}

bool hb_dev_is_direct(const struct hb_dev *d)
{
  return d->disk.direct;
}

bool hb_dev_prep_write(struct hb_dev *d, struct hb_req *req, void *buf, uint32_t count,
                       uint64_t off, unsigned flags)
{
  if (!in_bounds(d, count, off) || count == 0 || off + count > d->disk.dio_end)
    return false;
  if (d->disk.direct && !hb_direct_ok(buf, off, count, d->disk.mem_align, d->disk.off_align))
    return false;
  req->op = HB_OP_WRITE;
  req->fd = d->disk.fd;
  req->buf = buf;
  req->off = off;
  req->len = count;
  req->rw_flags = flags & HB_FUA ? RWF_DSYNC : 0;
  return true;
}

void hb_dev_range_begin(struct hb_dev *d, struct hb_range *r, uint64_t off, uint64_t len)
{
  hb_inflight_begin(&d->inflight, r, off, len);
}

void hb_dev_range_end(struct hb_dev *d, struct hb_range *r)
{
  hb_inflight_end(&d->inflight, r);
}

bool hb_dev_in_bounds(const struct hb_dev *d, uint64_t len, uint64_t off)
{
  return in_bounds(d, len, off);
}

int hb_dev_write_locked(struct hb_dev *d, const void *buf, uint32_t count,
                        uint64_t off, unsigned flags)
{
  return write_range(d, buf, count, off, flags & HB_FUA ? RWF_DSYNC : 0);
}

int hb_pwrite(struct hb_dev *d, const void *buf, uint32_t count, uint64_t off,
              unsigned flags)
{
  struct hb_range range;
  int r;

  if (!in_bounds(d, count, off))
    return -EINVAL;
  if (count == 0)
    return flags & HB_FUA ? hb_flush(d) : 0;
  /* Standalone through the page cache, nothing needs ordering: the kernel
   * writes any byte range without our read-modify-write. */
  if (!d->disk.direct)
    return hb_dev_write_locked(d, buf, count, off, flags);
  hb_inflight_begin(&d->inflight, &range, off, count);
  r = hb_dev_write_locked(d, buf, count, off, flags);
  hb_inflight_end(&d->inflight, &range);
  return r;
}

int hb_flush(struct hb_dev *d)
{
  return io_flush(d);
}

/* The aligned interior [*a, *b) of a range, for block-device ioctls. */
static bool interior(const struct hb_dev *d, uint64_t len, uint64_t off,
                     uint64_t *a, uint64_t *b)
{
  uint32_t align = d->disk.off_align;
  *a = hb_align_down(off + align - 1, align);
  *b = hb_align_down(off + len, align);
  return *a < *b;
}

static int trim_locked(struct hb_dev *d, uint64_t len, uint64_t off)
{
  uint64_t a, b;
  int r;

  if (d->disk.is_blk) {
    if (!interior(d, len, off, &a, &b))
      return 0;
    r = hb_disk_blk_ioctl(&d->disk, BLKDISCARD, a, b - a);
  } else {
    if (d->disk.no_punch)
      return 0;
    r = io_fallocate(d, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r == -EOPNOTSUPP)
      d->disk.no_punch = true;
  }
  /* Trim is advisory: a device that cannot discard has still done it. */
  return r == -EOPNOTSUPP || r == -ENOTTY ? 0 : r;
}

int hb_dev_trim_locked(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags)
{
  int r = trim_locked(d, count, off);
  if (r == 0 && (flags & HB_FUA))
    r = hb_flush(d);
  return r;
}

int hb_trim(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags)
{
  struct hb_range range;
  int r;

  if (!in_bounds(d, count, off))
    return -EINVAL;
  if (count == 0)
    return 0;
  hb_inflight_begin(&d->inflight, &range, off, count);
  r = hb_dev_trim_locked(d, count, off, flags);
  hb_inflight_end(&d->inflight, &range);
  return r;
}

/* Zero without writing zeroes: 0, or -EOPNOTSUPP when the device cannot. */
static int zero_offload(struct hb_dev *d, uint64_t len, uint64_t off, unsigned flags)
{
  int r;

  if (d->disk.is_blk) {
    uint64_t a, b;
    int mode;
    if (!interior(d, len, off, &a, &b))
      return -EOPNOTSUPP;
    /* On a block device PUNCH_HOLE never falls back to writing zeroes;
     * ZERO_RANGE may, so it is not "fast". */
    if (flags & HB_MAY_TRIM)
      mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    else if (!(flags & HB_FAST_ZERO))
      mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    else
      return -EOPNOTSUPP;
    r = hb_disk_fallocate(&d->disk, mode, a, b - a);
    if (r == 0 && a > off)
      r = write_zeroes(d, a - off, off, 0);
    if (r == 0 && off + len > b)
      r = write_zeroes(d, off + len - b, b, 0);
    return r == -EOPNOTSUPP || r == -EINVAL || r == -ENOTTY ? -EOPNOTSUPP : r;
  }

  if ((flags & HB_MAY_TRIM) && !d->disk.no_punch) {
    r = io_fallocate(d, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r != -EOPNOTSUPP)
      return r;
    d->disk.no_punch = true;
  }
  if (!d->disk.no_zero_range) {
    r = io_fallocate(d, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r != -EOPNOTSUPP)
      return r;
    d->disk.no_zero_range = true;
  }
  return -EOPNOTSUPP;
}

int hb_dev_zero_locked(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags)
{
  int r = zero_offload(d, count, off, flags);
  if (r == -EOPNOTSUPP)
    r = flags & HB_FAST_ZERO ? -ENOTSUP : write_zeroes(d, count, off, 0);
  if (r == 0 && (flags & HB_FUA))
    r = hb_flush(d);
  return r;
}

int hb_zero(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags)
{
  struct hb_range range;
  int r;

  if (!in_bounds(d, count, off))
    return -EINVAL;
  if (count == 0)
    return 0;
  hb_inflight_begin(&d->inflight, &range, off, count);
  r = hb_dev_zero_locked(d, count, off, flags);
  hb_inflight_end(&d->inflight, &range);
  return r;
}

int hb_cache(struct hb_dev *d, uint32_t count, uint64_t off)
{
  if (!in_bounds(d, count, off))
    return -EINVAL;
  /* O_DIRECT reads never use the page cache: prefetching into it would only
   * evict someone else's pages. */
  if (d->disk.direct)
    return 0;
  return -posix_fadvise(d->disk.fd, (off_t) off, count, POSIX_FADV_WILLNEED);
}

/* Allocation from lseek(SEEK_DATA / SEEK_HOLE), which needs no lock of
 * ours: every I/O of ours is positional, so moving the descriptor's offset
 * disturbs nothing. A request in flight may or may not be seen, as with
 * any read. A range the file system reports as a hole reads as zeroes: a
 * punched hole, a range never written, or one zeroed with ZERO_RANGE
 * (unwritten extents: allocated, but SEEK_DATA cannot tell them from a
 * hole, so a zero with NO_HOLE is reported as a hole too, as nbdkit's file
 * plugin does). At most EXTENTS_MAX extents. */
int hb_extents(struct hb_dev *d, uint32_t count, uint64_t off, bool req_one,
               hb_extent_fn add, void *opaque)
{
  uint64_t pos = off, end = off + count;
  unsigned n = 0;
  int r;

  if (!in_bounds(d, count, off))
    return -EINVAL;
  if (!d->can_extents)
    return count ? add(opaque, off, count, false) : 0;
  while (pos < end && n++ < EXTENTS_MAX) {
    off_t data = lseek(d->disk.fd, (off_t) pos, SEEK_DATA);
    uint64_t next;
    bool hole;

    if (data < 0 && errno != ENXIO)
      return -errno;
    if (data < 0 || (uint64_t) data > pos) {
      hole = true;             /* ENXIO: no data from pos to the end */
      next = data < 0 ? end : (uint64_t) data;
    } else {
      off_t h = lseek(d->disk.fd, (off_t) pos, SEEK_HOLE);
      if (h < 0 && errno != ENXIO)
        return -errno;
      hole = false;
      next = h < 0 ? end : (uint64_t) h;
    }
    /* A file changed under us (truncated by someone else) must not make
     * us loop: what is left is reported as data, which is always true. */
    if (next <= pos) {
      hole = false;
      next = end;
    }
    if (next > end)
      next = end;
    if ((r = add(opaque, pos, next - pos, hole)) < 0)
      return r;
    pos = next;
    if (req_one)
      break;
  }
  return 0;
}
