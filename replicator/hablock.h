/* hablock: the replicator's public interface, the one header the nbdkit
 * plugin includes.
 *
 * Every function returns 0 (or a count) on success and -errno on failure; it
 * never prints. Messages go through the log callback set with hb_set_log().
 * Setup functions that can fail for a reason the user must read also fill an
 * error buffer with one line naming the problem.
 */
#ifndef HABLOCK_H
#define HABLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HB_ERRLEN 256

enum hb_log_level { HB_LOG_DEBUG, HB_LOG_INFO, HB_LOG_ERROR };
typedef void (*hb_log_fn)(enum hb_log_level level, const char *msg);
void hb_set_log(hb_log_fn fn);

/* Local I/O backends. HB_IO_DEFAULT picks the measured best one for the
 * cache mode (docs/benchmarks.md). HB_IO_HYBRID: the worker's own
 * syscalls, except a write that finds another write in progress, which
 * goes to the loop (dev.c). */
enum hb_io { HB_IO_DEFAULT, HB_IO_SYNC, HB_IO_URING, HB_IO_AIO, HB_IO_HYBRID };
enum hb_cache { HB_CACHE_NONE, HB_CACHE_WRITEBACK };

struct hb_params {
  char *disk;          /* backing file or block device (standalone) */
  char *config;        /* resource configuration file (replicated) */
  char *node;          /* this node's name in it (default: the hostname) */
  enum hb_io io;
  enum hb_cache cache;
  unsigned queue_depth; /* loop thread's ring / aio context depth */
  unsigned given;       /* hb_params_set: io=, cache=, queue-depth= seen */
  bool force_aio_fallback; /* debug: pretend io_uring_queue_init failed */
  bool force_no_loop;   /* debug: pretend neither a ring nor an aio context can be made */
  bool fail_flush;      /* debug: as a Secondary, fail the peer's FLUSH with EIO */
  bool fail_write;      /* debug: as a Secondary, fail the peer's WRITEs with EIO */
  bool fail_local_flush; /* debug: as a Primary, the local disk fails its clients' flushes */
  bool fail_local_write; /* debug: as a Primary, the local disk fails its clients' writes */
  unsigned stall_flush_ms; /* debug: as a Secondary, hold the peer's FLUSH this long */
  unsigned stall_write_ms; /* debug: as a Secondary, hold each of the peer's WRITEs this long */
  unsigned stall_send_ms; /* debug: as a Primary, hold each replicated request this long
                             before handing it to the link, and again if that fails */
  int ack_spin_us;      /* debug: a lone waiter's spin for its ACK (-1: default) */
  bool write_lock;      /* experiment: page-cache writes to a file also
                           wait on our lock (wlock.h); off by default,
                           docs/architecture.md says why */
};

/* Parse one key=value parameter. Returns 0, or -EINVAL with err filled. */
int hb_params_set(struct hb_params *p, const char *key, const char *value,
                  char *err, size_t errlen);
/* Check the whole set once every key was seen. */
int hb_params_check(const struct hb_params *p, char *err, size_t errlen);
void hb_params_free(struct hb_params *p);
/* The key=value help text for nbdkit --help. */
extern const char hb_params_help[];
/* The backends compiled in, space separated ("sync uring aio hybrid"). */
const char *hb_io_compiled(void);
const char *hb_io_name(enum hb_io io);
const char *hb_cache_name(enum hb_cache c);

struct hb_dev;

/* Open the backing device and choose the backend (nbdkit .get_ready).
 * No thread is started yet. */
int hb_dev_open(const struct hb_params *p, struct hb_dev **out,
                char *err, size_t errlen);
/* Start the loop thread if the backend needs one (nbdkit .after_fork). */
int hb_dev_start(struct hb_dev *d, char *err, size_t errlen);
void hb_dev_close(struct hb_dev *d);

uint64_t hb_dev_size(const struct hb_dev *d);
enum hb_io hb_dev_io(const struct hb_dev *d);
/* The loop the device's I/O goes through: "uring", "aio", or "" (io=sync). */
const char *hb_dev_loop_name(const struct hb_dev *d);
/* Preferred I/O size: the direct-I/O alignment, at least 4096. */
uint32_t hb_dev_preferred_block(const struct hb_dev *d);
bool hb_dev_can_trim(const struct hb_dev *d);
bool hb_dev_can_fast_zero(const struct hb_dev *d);
/* Whether the device underneath spins (sysfs), for NBD_FLAG_ROTATIONAL. */
bool hb_dev_is_rotational(const struct hb_dev *d);
/* Whether hb_extents reports holes (a regular file), or only data. */
bool hb_dev_can_extents(const struct hb_dev *d);

/* Flags for the data path. */
#define HB_FUA       (1u << 0)
#define HB_MAY_TRIM  (1u << 1)
#define HB_FAST_ZERO (1u << 2)

int hb_pread(struct hb_dev *d, void *buf, uint32_t count, uint64_t off);
int hb_pwrite(struct hb_dev *d, const void *buf, uint32_t count, uint64_t off,
              unsigned flags);
int hb_flush(struct hb_dev *d);
int hb_trim(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags);
int hb_zero(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags);
int hb_cache(struct hb_dev *d, uint32_t count, uint64_t off);
/* NBD block status: the allocation of [off, off+count) as contiguous
 * extents in ascending order from off, each passed to add (hole: reads as
 * zeroes and is not allocated); with req_one only the first. add returns
 * 0 or -errno, which stops the walk and is returned. */
typedef int (*hb_extent_fn)(void *opaque, uint64_t off, uint64_t len, bool hole);
int hb_extents(struct hb_dev *d, uint32_t count, uint64_t off, bool req_one,
               hb_extent_fn add, void *opaque);

/* The resource: the device, and in replicated mode (config=) the peer
 * link, the role and the control socket. The plugin uses only these. */
struct hb_res;
int hb_res_open(const struct hb_params *p, struct hb_res **out, char *err, size_t errlen);
int hb_res_start(struct hb_res *r, char *err, size_t errlen);
void hb_res_close(struct hb_res *r);
struct hb_dev *hb_res_dev(struct hb_res *r);
/* One line naming what is served, for NBD clients ("hablock: resource r0,
 * node alpha", or standalone "hablock: FILENAME", the disk's last path
 * component, in printable ASCII). */
const char *hb_res_description(const struct hb_res *r);
/* An NBD client connects: 0 with *epoch set, or a positive refusal (this
 * node is not Primary) with one line in msg. */
int hb_res_client_open(struct hb_res *r, uint64_t *epoch, char *msg, size_t len);
void hb_res_client_close(struct hb_res *r);
/* Was this node demoted since a client opened with this epoch? Such a
 * client is served nothing, even once the node is Primary again: what it
 * has cached may be stale, and its writes would land on the other
 * Primary's data. */
bool hb_res_client_stale(struct hb_res *r, uint64_t epoch);
/* Whether a fast zero can ever succeed (never through the replication). */
bool hb_res_can_fast_zero(struct hb_res *r);
int hb_res_pread(struct hb_res *r, void *buf, uint32_t count, uint64_t off);
int hb_res_pwrite(struct hb_res *r, const void *buf, uint32_t count, uint64_t off,
                  unsigned flags);
int hb_res_flush(struct hb_res *r);
int hb_res_trim(struct hb_res *r, uint32_t count, uint64_t off, unsigned flags);
int hb_res_zero(struct hb_res *r, uint32_t count, uint64_t off, unsigned flags);
int hb_res_cache(struct hb_res *r, uint32_t count, uint64_t off);
int hb_res_extents(struct hb_res *r, uint32_t count, uint64_t off, bool req_one,
                   hb_extent_fn add, void *opaque);

#endif
