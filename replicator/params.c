/* The plugin's key=value parameters: pure parsing, no I/O. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hb-build.h"
#include "hablock.h"
#include "log.h"

const char hb_params_help[] =
  "disk=<FILENAME>      Backing file or block device (standalone).\n"
  "config=<FILE>        Resource configuration: replicate (instead of disk=).\n"
  "node=<NAME>          This node's name in the configuration (default: hostname).\n"
  "io=sync|uring|aio|hybrid\n"
  "                     Local I/O backend (default: measured best).\n"
  "cache=none|writeback none: O_DIRECT (default); writeback: page cache.\n"
  "queue-depth=<N>      Depth of the loop thread's ring (default 128).";

static const char *const io_names[] = {
  [HB_IO_DEFAULT] = "default", [HB_IO_SYNC] = "sync",
  [HB_IO_URING] = "uring", [HB_IO_AIO] = "aio", [HB_IO_HYBRID] = "hybrid",
};

const char *hb_io_name(enum hb_io io)
{
  return io < sizeof io_names / sizeof io_names[0] ? io_names[io] : "?";
}

const char *hb_cache_name(enum hb_cache c)
{
  return c == HB_CACHE_NONE ? "none" : "writeback";
}

const char *hb_io_compiled(void)
{
  return "sync"
#if HAVE_LIBURING
    " uring"
#endif
#if HAVE_LIBAIO
    " aio"
#endif
#if HAVE_LIBURING || HAVE_LIBAIO
    " hybrid"
#endif
    ;
}

static bool io_compiled(enum hb_io io)
{
  switch (io) {
  case HB_IO_DEFAULT:
  case HB_IO_SYNC:
    return true;
  case HB_IO_URING:
    return HAVE_LIBURING;
  case HB_IO_AIO:
    return HAVE_LIBAIO;
  case HB_IO_HYBRID:
    return HAVE_LIBURING || HAVE_LIBAIO;
  }
  return false;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max,
                      unsigned long *out)
{
  char *end;
  unsigned long v;

  if (*s < '0' || *s > '9')
    return -EINVAL;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || *end || v < min || v > max)
    return -EINVAL;
  *out = v;
  return 0;
}

int hb_params_set(struct hb_params *p, const char *key, const char *value,
                  char *err, size_t errlen)
{
  if (strcmp(key, "disk") == 0) {
    if (p->disk)
      return hb_fail(err, errlen, EINVAL, "disk= given twice ('%s' and '%s')",
                     p->disk, value);
    if (!*value)
      return hb_fail(err, errlen, EINVAL, "disk= is empty");
    p->disk = strdup(value);
    return p->disk ? 0 : -ENOMEM;
  }
  if (strcmp(key, "config") == 0 || strcmp(key, "node") == 0) {
    char **slot = key[0] == 'c' ? &p->config : &p->node;
    if (*slot)
      return hb_fail(err, errlen, EINVAL, "%s= given twice", key);
    if (!*value)
      return hb_fail(err, errlen, EINVAL, "%s= is empty", key);
    *slot = strdup(value);
    return *slot ? 0 : -ENOMEM;
  }
  static const char *const once[] = { "io", "cache", "queue-depth" };
  for (unsigned i = 0; i < sizeof once / sizeof once[0]; i++) {
    if (strcmp(key, once[i]) != 0)
      continue;
    if (p->given & (1u << i))
      return hb_fail(err, errlen, EINVAL, "%s= given twice", key);
    p->given |= 1u << i;      /* a refused value still counts: one line, one error */
  }
  if (strcmp(key, "io") == 0) {
    enum hb_io io;
    for (io = HB_IO_SYNC; io <= HB_IO_HYBRID; io++)
      if (strcmp(value, io_names[io]) == 0)
        break;
    if (io > HB_IO_HYBRID)
      return hb_fail(err, errlen, EINVAL,
                     "io=%s: unknown I/O backend (expected sync, uring, aio or hybrid)", value);
    if (!io_compiled(io))
      return hb_fail(err, errlen, EINVAL,
                     "io=%s: backend not compiled in (have: %s)", value, hb_io_compiled());
    p->io = io;
    return 0;
  }
  if (strcmp(key, "cache") == 0) {
    if (strcmp(value, "none") == 0)
      p->cache = HB_CACHE_NONE;
    else if (strcmp(value, "writeback") == 0)
      p->cache = HB_CACHE_WRITEBACK;
    else
      return hb_fail(err, errlen, EINVAL,
                     "cache=%s: unknown cache mode (expected none or writeback)", value);
    return 0;
  }
  if (strcmp(key, "queue-depth") == 0) {
    unsigned long v;
    if (parse_uint(value, 1, 4096, &v) < 0)
      return hb_fail(err, errlen, EINVAL,
                     "queue-depth=%s: expected a whole number from 1 to 4096", value);
    p->queue_depth = (unsigned) v;
    return 0;
  }
  return hb_fail(err, errlen, EINVAL, "unknown parameter '%s'", key);
}

int hb_params_check(const struct hb_params *p, char *err, size_t errlen)
{
  if (p->disk && p->config)
    return hb_fail(err, errlen, EINVAL,
                   "disk= and config= conflict: the configuration names each node's disk");
  if (p->node && !p->config)
    return hb_fail(err, errlen, EINVAL, "node= needs config=");
  if (!p->disk && !p->config)
    return hb_fail(err, errlen, EINVAL, "missing parameter: disk=<FILENAME> or config=<FILE>");
  return 0;
}

void hb_params_free(struct hb_params *p)
{
  free(p->disk);
  free(p->config);
  free(p->node);
  p->disk = p->config = p->node = NULL;
}
