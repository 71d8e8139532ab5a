/* nbdkit-hablock-plugin: the thin adapter between nbdkit and the replicator.
 * Callbacks in lifecycle order; the plugin table at the bottom is the index.
 * Everything else lives in ../replicator (hablock.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "hablock.h"
#include "hb-build.h"

/* Debug flags (-D hablock.NAME=1): fault hooks for tests, not parameters. */
NBDKIT_DLL_PUBLIC int hablock_debug_force_aio_fallback = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_force_no_loop = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_fail_flush = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_fail_write = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_fail_local_flush = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_fail_local_write = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_stall_flush_ms = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_stall_write_ms = 0;
NBDKIT_DLL_PUBLIC int hablock_debug_stall_send_ms = 0;
/* Tuning, for measuring: microseconds a lone waiter spins for its ACK
 * (replication; -1: the built-in default, 0: never spin). */
NBDKIT_DLL_PUBLIC int hablock_debug_ack_spin_us = -1;
/* An experiment, off by default: 1 makes page-cache writes to a file wait
 * on our lock (wlock.h) instead of the kernel's inode lock. */
NBDKIT_DLL_PUBLIC int hablock_debug_write_lock = 0;

static struct hb_params params;
static struct hb_res *res;
static struct hb_dev *dev;      /* hb_res_dev(res): size and block size */

/* nbdkit has errors and debug messages; what the operator should see without
 * -v (a backend fallback) goes to stderr, which is the terminal during
 * .get_ready and the journal under systemd (nbdkit -f). */
static void log_to_nbdkit(enum hb_log_level level, const char *msg)
{
  switch (level) {
  case HB_LOG_ERROR:
    nbdkit_error("%s", msg);
    break;
  case HB_LOG_INFO:
    fprintf(stderr, "nbdkit: hablock: %s\n", msg);
    break;
  case HB_LOG_DEBUG:
    nbdkit_debug("%s", msg);
    break;
  }
}

static void hablock_load(void)
{
  hb_set_log(log_to_nbdkit);
}

static void hablock_unload(void)
{
  hb_res_close(res);
  res = NULL;
  dev = NULL;
  hb_params_free(&params);
}

static int hablock_config(const char *key, const char *value)
{
  char err[HB_ERRLEN];

  if (hb_params_set(&params, key, value, err, sizeof err) < 0) {
    nbdkit_error("%s", err);
    return -1;
  }
  return 0;
}

static int hablock_config_complete(void)
{
  char err[HB_ERRLEN];

  params.force_aio_fallback = hablock_debug_force_aio_fallback != 0;
  params.force_no_loop = hablock_debug_force_no_loop != 0;
  params.fail_flush = hablock_debug_fail_flush != 0;
  params.fail_write = hablock_debug_fail_write != 0;
  params.fail_local_flush = hablock_debug_fail_local_flush != 0;
  params.fail_local_write = hablock_debug_fail_local_write != 0;
  params.stall_flush_ms = hablock_debug_stall_flush_ms > 0 ? (unsigned) hablock_debug_stall_flush_ms : 0;
  params.stall_write_ms = hablock_debug_stall_write_ms > 0 ? (unsigned) hablock_debug_stall_write_ms : 0;
  params.stall_send_ms = hablock_debug_stall_send_ms > 0 ? (unsigned) hablock_debug_stall_send_ms : 0;
  params.ack_spin_us = hablock_debug_ack_spin_us;
  params.write_lock = hablock_debug_write_lock != 0;
  if (hb_params_check(&params, err, sizeof err) < 0) {
    nbdkit_error("%s", err);
    return -1;
  }
  return 0;
}

static int hablock_get_ready(void)
{
  char err[HB_ERRLEN];

  if (hb_res_open(&params, &res, err, sizeof err) < 0) {
    nbdkit_error("%s", err);
    return -1;
  }
  dev = hb_res_dev(res);
  return 0;
}

static int hablock_after_fork(void)
{
  char err[HB_ERRLEN];

  if (hb_res_start(res, err, sizeof err) < 0) {
    nbdkit_error("%s", err);
    return -1;
  }
  nbdkit_debug("hablock: serving %s with io=%s%s%s cache=%s",
               params.config ? params.config : params.disk,
               hb_io_name(hb_dev_io(dev)), *hb_dev_loop_name(dev) ? " loop=" : "",
               hb_dev_loop_name(dev), hb_cache_name(params.cache));
  return 0;
}

static void hablock_dump_plugin(void)
{
  printf("hablock_version=%s\n", HABLOCK_VERSION);
  printf("hablock_io_backends=%s\n", hb_io_compiled());
}

/* The role gates every connection: a Secondary serves nobody. A
 * connection remembers the role epoch it opened in: once this node has
 * been demoted under it, it is served nothing, even if the node becomes
 * Primary again (its cached view is stale). */
struct conn {
  uint64_t epoch;
};

static void *hablock_open(int readonly)
{
  char msg[HB_ERRLEN];
  struct conn *c = malloc(sizeof *c);

  if (!c) {
    nbdkit_error("out of memory");
    return NULL;
  }
  if (hb_res_client_open(res, &c->epoch, msg, sizeof msg) != 0) {
    nbdkit_error("%s", msg);
    free(c);
    return NULL;
  }
  return c;
}

static void hablock_close(void *handle)
{
  hb_res_client_close(res);
  free(handle);
}

/* EROFS (EPERM on the wire) for a connection that outlived a demotion. */
static bool stale(void *handle)
{
  if (!hb_res_client_stale(res, ((struct conn *) handle)->epoch))
    return false;
  nbdkit_set_error(EROFS);
  return true;
}

/* nbdinfo shows it: which resource and node a client reached. */
static const char *hablock_export_description(void *handle)
{
  return hb_res_description(res);
}

static int64_t hablock_get_size(void *handle)
{
  return (int64_t) hb_dev_size(dev);
}

static int hablock_block_size(void *handle, uint32_t *minimum,
                              uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;          /* unaligned requests work (read-modify-write) */
  *preferred = hb_dev_preferred_block(dev);
  *maximum = 64 << 20;   /* nbdkit's own limit on one request */
  return 0;
}

/* Told to the client (NBD_FLAG_ROTATIONAL): the kernel's client then
 * schedules for a spinning disk. */
static int hablock_is_rotational(void *handle) { return hb_dev_is_rotational(dev); }
static int hablock_can_write(void *handle) { return 1; }
static int hablock_can_flush(void *handle) { return 1; }
static int hablock_can_trim(void *handle) { return hb_dev_can_trim(dev); }
static int hablock_can_zero(void *handle) { return 1; }
static int hablock_can_fast_zero(void *handle) { return hb_res_can_fast_zero(res); }
static int hablock_can_fua(void *handle) { return NBDKIT_FUA_NATIVE; }
static int hablock_can_cache(void *handle) { return NBDKIT_CACHE_NATIVE; }
static int hablock_can_extents(void *handle) { return hb_dev_can_extents(dev); }

/* Every connection writes through the same descriptor, so a flush on any
 * connection covers the writes completed on all of them. */
static int hablock_can_multi_conn(void *handle) { return 1; }

static int result(int r)
{
  if (r < 0) {
    nbdkit_set_error(-r);
    return -1;
  }
  return 0;
}

static unsigned to_hb_flags(uint32_t flags)
{
  return (flags & NBDKIT_FLAG_FUA ? HB_FUA : 0) |
         (flags & NBDKIT_FLAG_MAY_TRIM ? HB_MAY_TRIM : 0) |
         (flags & NBDKIT_FLAG_FAST_ZERO ? HB_FAST_ZERO : 0);
}

static int hablock_pread(void *handle, void *buf, uint32_t count,
                         uint64_t offset, uint32_t flags)
{
  if (stale(handle))
    return -1;
  return result(hb_res_pread(res, buf, count, offset));
}

static int hablock_pwrite(void *handle, const void *buf, uint32_t count,
                          uint64_t offset, uint32_t flags)
{
  if (stale(handle))
    return -1;
  return result(hb_res_pwrite(res, buf, count, offset, to_hb_flags(flags)));
}

static int hablock_flush(void *handle, uint32_t flags)
{
  if (stale(handle))
    return -1;
  return result(hb_res_flush(res));
}

static int hablock_trim(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
  if (stale(handle))
    return -1;
  return result(hb_res_trim(res, count, offset, to_hb_flags(flags)));
}

static int hablock_zero(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
  if (stale(handle))
    return -1;
  return result(hb_res_zero(res, count, offset, to_hb_flags(flags)));
}

static int hablock_cache(void *handle, uint32_t count, uint64_t offset,
                         uint32_t flags)
{
  if (stale(handle))
    return -1;
  return result(hb_res_cache(res, count, offset));
}

static int add_extent(void *opaque, uint64_t offset, uint64_t length, bool hole)
{
  uint32_t type = hole ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;
  return nbdkit_add_extent(opaque, offset, length, type) == 0 ? 0 : -(errno ? errno : EIO);
}

static int hablock_extents(void *handle, uint32_t count, uint64_t offset,
                           uint32_t flags, struct nbdkit_extents *extents)
{
  if (stale(handle))
    return -1;
  return result(hb_res_extents(res, count, offset, flags & NBDKIT_FLAG_REQ_ONE,
                               add_extent, extents));
}

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
  .name              = "hablock",
  .longname          = "hablock replicated block device",
  .version           = HABLOCK_VERSION,
  .description       = "Serve a local disk through hablock's I/O engine",
  .load              = hablock_load,
  .unload            = hablock_unload,
  .config            = hablock_config,
  .config_complete   = hablock_config_complete,
  .config_help       = hb_params_help,
  .magic_config_key  = "disk",
  .get_ready         = hablock_get_ready,
  .after_fork        = hablock_after_fork,
  .dump_plugin       = hablock_dump_plugin,
  .open              = hablock_open,
  .close             = hablock_close,
  .export_description = hablock_export_description,
  .get_size          = hablock_get_size,
  .block_size        = hablock_block_size,
  .is_rotational     = hablock_is_rotational,
  .can_write         = hablock_can_write,
  .can_flush         = hablock_can_flush,
  .can_trim          = hablock_can_trim,
  .can_zero          = hablock_can_zero,
  .can_fast_zero     = hablock_can_fast_zero,
  .can_fua           = hablock_can_fua,
  .can_cache         = hablock_can_cache,
  .can_extents       = hablock_can_extents,
  .can_multi_conn    = hablock_can_multi_conn,
  .pread             = hablock_pread,
  .pwrite            = hablock_pwrite,
  .flush             = hablock_flush,
  .trim              = hablock_trim,
  .zero              = hablock_zero,
  .cache             = hablock_cache,
  .extents           = hablock_extents,
  .errno_is_preserved = 0,
};

/* nbdkit's macro defines it without a declaration (clang's
 * -Wmissing-prototypes). */
struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
