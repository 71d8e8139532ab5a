/* Fuzz target: the plugin's key=value parameters (replicator/params.c),
 * one per input line, then the check nbdkit's config_complete runs; and
 * the role, disk and connection names each value might be. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "hablock.h"
#include "role.h"
#include "fuzz.h"

/* Input: lines "key=value" (like nbdkit's command line). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  struct hb_params p;
  memset(&p, 0, sizeof p);
  char err[HB_ERRLEN];
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *eq = strchr(line, '=');
    const char *key = line, *value = "";
    if (eq) { *eq = '\0'; value = eq + 1; }
    { enum hb_role ro; enum hb_disk di; enum hb_conn co;
      if (hb_role_parse(value, &ro) == 0 && strcasecmp(hb_role_name(ro), value)) abort();
      if (hb_disk_parse(value, &di) == 0 && strcasecmp(hb_disk_name(di), value)) abort();
      if (hb_conn_parse(value, &co) == 0 && strcasecmp(hb_conn_name(co), value)) abort(); }
    err[0] = '\0';             /* a refusal must say why: no stale message */
    int r = hb_params_set(&p, key, value, err, sizeof err);
    if (r != 0 && r != -EINVAL && r != -ENOMEM) abort();
    if (r == -EINVAL && !err[0]) abort();
  }
  (void) hb_params_check(&p, err, sizeof err);
  (void) hb_io_name(p.io);
  (void) hb_cache_name(p.cache);
  if (p.queue_depth > 4096) abort();
  hb_params_free(&p);
  free(text);
  return 0;
}
