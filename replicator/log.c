#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

static hb_log_fn log_fn;

void hb_set_log(hb_log_fn fn)
{
  log_fn = fn;
}

void hb_log(enum hb_log_level level, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  if (!log_fn)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_fn(level, msg);
}

int hb_fail(char *buf, size_t len, int err, const char *fmt, ...)
{
  va_list ap;

  if (buf && len) {
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
  }
  return -err;
}
