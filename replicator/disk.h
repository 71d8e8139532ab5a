/* The backing device: a regular file or a block device, opened with O_DIRECT
 * (cache=none) or through the page cache (cache=writeback), and the plain
 * syscalls the `sync` backend and every fallback use. */
#ifndef HB_DISK_H
#define HB_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct hb_disk {
  char *path;
  int fd;               /* O_DIRECT when direct */
  int fd_buf;           /* page-cache descriptor for the tail past the last
                           whole block of a file under O_DIRECT; == fd when
                           not direct */
  bool direct;
  bool is_blk;
  uint64_t size;
  uint64_t dio_end;     /* size rounded down to tail_align (direct), or size */
  uint32_t mem_align;   /* O_DIRECT buffer alignment */
  uint32_t off_align;   /* O_DIRECT offset and length alignment */
  uint32_t tail_align;  /* max(off_align, page size, st_blksize): dio_end's */
  bool no_punch;        /* learned: hole punching unsupported */
  bool no_zero_range;   /* learned: FALLOC_FL_ZERO_RANGE unsupported */
  bool rotational;      /* the kernel says the device underneath spins */
};

int hb_disk_open(struct hb_disk *d, const char *path, bool direct,
                 char *err, size_t errlen);
void hb_disk_close(struct hb_disk *d);

/* Whole transfers: loop over short reads and writes, retry EINTR.
 * Return 0 or -errno (-EIO on an unexpected end of file). */
int hb_pread_full(int fd, void *buf, uint64_t len, uint64_t off);
int hb_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off, int rwflags);

/* fallocate(2), BLKDISCARD and BLKZEROOUT with -errno results. */
int hb_disk_fallocate(const struct hb_disk *d, int mode, uint64_t off, uint64_t len);
int hb_disk_blk_ioctl(const struct hb_disk *d, unsigned long req, uint64_t off, uint64_t len);

#endif
