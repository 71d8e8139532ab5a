/* Logging through the host's callback (nbdkit_error / nbdkit_debug in the
 * plugin, stderr in tests). The library never prints on its own. */
#ifndef HB_LOG_H
#define HB_LOG_H

#include "hablock.h"

void hb_log(enum hb_log_level level, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

#define hb_debug(...) hb_log(HB_LOG_DEBUG, __VA_ARGS__)
#define hb_info(...)  hb_log(HB_LOG_INFO, __VA_ARGS__)
#define hb_error(...) hb_log(HB_LOG_ERROR, __VA_ARGS__)

/* Fill an error buffer (may be NULL) with one line; returns -err. */
int hb_fail(char *buf, size_t len, int err, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

#endif
