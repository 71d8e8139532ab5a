#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include "align.h"
#include "disk.h"
#include "log.h"

#define DEFAULT_ALIGN 4096u

static uint32_t pow2_or(uint32_t v, uint32_t fallback)
{
  return v && !(v & (v - 1)) ? v : fallback;
}

/* The direct-I/O alignments the kernel reports (statx STATX_DIOALIGN, Linux
 * 6.1), or the logical block size of a block device, or a safe 4096. */
static void probe_alignment(struct hb_disk *d)
{
  struct statx stx;

  d->mem_align = d->off_align = DEFAULT_ALIGN;
  if (d->is_blk) {
    int lbs = 0;
    if (ioctl(d->fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
      d->off_align = pow2_or((uint32_t) lbs, DEFAULT_ALIGN);
    d->mem_align = d->off_align;
  }
#ifdef STATX_DIOALIGN
  if (statx(d->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
    d->off_align = pow2_or(stx.stx_dio_offset_align, d->off_align);
    d->mem_align = pow2_or(stx.stx_dio_mem_align, d->mem_align);
  }
#else
  (void) stx;
#endif
}

/* Whether the block device underneath spins, as its queue says in sysfs:
 * the device itself (a block device) or the one holding the file system
 * (a file). A partition has no queue of its own: its disk's, one level up
 * (the kernel follows the /sys/dev/block symlink before the ".."). Nothing
 * found (tmpfs, a file system over several devices): not rotational. */
static bool probe_rotational(dev_t dev)
{
  static const char *const where[] = { "queue", "../queue" };
  char path[96], c = 0;

  for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
    snprintf(path, sizeof path, "/sys/dev/block/%u:%u/%s/rotational", major(dev), minor(dev),
             where[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      continue;
    ssize_t n = read(fd, &c, 1);
    close(fd);
    return n == 1 && c == '1';
  }
  return false;
}

int hb_disk_open(struct hb_disk *d, const char *path, bool direct,
                 char *err, size_t errlen)
{
  struct stat st;
  int flags = O_RDWR | O_CLOEXEC;
  int r;

  memset(d, 0, sizeof *d);
  d->fd = d->fd_buf = -1;
  if (stat(path, &st) < 0)
    return hb_fail(err, errlen, errno, "disk %s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode))
    return hb_fail(err, errlen, EISDIR, "disk %s: is a directory, not a file or block device", path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    return hb_fail(err, errlen, EINVAL, "disk %s: not a regular file or block device", path);
  d->is_blk = S_ISBLK(st.st_mode);
  /* Claim a block device exclusively, as DRBD does: nobody mounts it under us. */
  if (d->is_blk)
    flags |= O_EXCL;

  d->fd = open(path, flags | (direct ? O_DIRECT : 0));
  if (d->fd < 0) {
    r = errno;
    if (r == EINVAL && direct)
      return hb_fail(err, errlen, r,
                     "disk %s: its filesystem does not support O_DIRECT (cache=none); use cache=writeback",
                     path);
    return hb_fail(err, errlen, r, "disk %s: %s", path, strerror(r));
  }
  d->direct = direct;
  if (d->is_blk) {
    uint64_t sz;
    if (ioctl(d->fd, BLKGETSIZE64, &sz) < 0) {
      r = errno;
      hb_disk_close(d);
      return hb_fail(err, errlen, r, "disk %s: BLKGETSIZE64: %s", path, strerror(r));
    }
    d->size = sz;
  } else {
    d->size = (uint64_t) st.st_size;
  }
  if (d->size == 0) {
    hb_disk_close(d);
    return hb_fail(err, errlen, EINVAL, "disk %s: size 0 (empty), nothing to serve", path);
  }
  probe_alignment(d);
  d->rotational = probe_rotational(d->is_blk ? st.st_rdev : st.st_dev);
  d->dio_end = d->size;
  d->fd_buf = d->fd;
  /* The tail goes through the page cache from the start of the page (or
   * filesystem block) that holds it, not from the last direct-I/O sector:
   * ext4 here allows 512-byte direct I/O in 4 KiB pages, and an async
   * O_DIRECT write into the page a buffered tail write has just dirtied
   * cannot invalidate it ("Page cache invalidation failure on direct
   * I/O"): writeback later puts the old sector back over an acknowledged
   * write. So no page is written both ways. */
  d->tail_align = d->off_align;
  if ((uint32_t) sysconf(_SC_PAGESIZE) > d->tail_align)
    d->tail_align = (uint32_t) sysconf(_SC_PAGESIZE);
  if (st.st_blksize > 0 && st.st_blksize <= (1 << 20) && !(st.st_blksize & (st.st_blksize - 1)) &&
      (uint32_t) st.st_blksize > d->tail_align)
    d->tail_align = (uint32_t) st.st_blksize;
  if (direct && !hb_is_aligned(d->size, d->tail_align)) {
    d->dio_end = hb_align_down(d->size, d->tail_align);
    d->fd_buf = open(path, O_RDWR | O_CLOEXEC);
    if (d->fd_buf < 0) {
      r = errno;
      d->fd_buf = d->fd;
      hb_disk_close(d);
      return hb_fail(err, errlen, r, "disk %s: %s", path, strerror(r));
    }
  }
  d->path = strdup(path);
  if (!d->path) {
    hb_disk_close(d);
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  }
  return 0;
}

void hb_disk_close(struct hb_disk *d)
{
  if (d->fd_buf >= 0 && d->fd_buf != d->fd)
    close(d->fd_buf);
  if (d->fd >= 0)
    close(d->fd);
  d->fd = d->fd_buf = -1;
  free(d->path);
  d->path = NULL;
}

int hb_pread_full(int fd, void *buf, uint64_t len, uint64_t off)
{
  char *p = buf;

  while (len) {
    ssize_t r = pread(fd, p, len, (off_t) off);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return -errno;
    }
    if (r == 0)
      return -EIO;
    p += r;
    off += (uint64_t) r;
    len -= (uint64_t) r;
  }
  return 0;
}

int hb_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off, int rwflags)
{
  const char *p = buf;

  while (len) {
    struct iovec iov = { .iov_base = (void *) p, .iov_len = len };
    ssize_t r = rwflags ? pwritev2(fd, &iov, 1, (off_t) off, rwflags)
                        : pwrite(fd, p, len, (off_t) off);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return -errno;
    }
    if (r == 0)
      return -EIO;
    p += r;
    off += (uint64_t) r;
    len -= (uint64_t) r;
  }
  return 0;
}

int hb_disk_fallocate(const struct hb_disk *d, int mode, uint64_t off, uint64_t len)
{
  while (fallocate(d->fd, mode, (off_t) off, (off_t) len) < 0) {
    if (errno != EINTR)
      return -errno;
  }
  return 0;
}

int hb_disk_blk_ioctl(const struct hb_disk *d, unsigned long req, uint64_t off, uint64_t len)
{
  uint64_t range[2] = { off, len };

  while (ioctl(d->fd, req, range) < 0) {
    if (errno != EINTR)
      return -errno;
  }
  return 0;
}
