/* Fuzz target: the configuration parser (hb_config_parse_string). The
 * input is the file's text; it is parsed as this node (the first [node
 * NAME] in it), again with a relative file name and the host's name, and
 * once with a 4-byte error buffer. A parse that succeeds must give a
 * configuration whose invariants hold (two nodes with absolute paths, the
 * TLS mode's files, ping-timeout longer than ping-interval...); one that
 * fails must say why in the buffer. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "fuzz.h"

static void check_ok(const struct hb_config *c)
{
  if (!c->name || !c->file || c->self > 1 || c->peer != 1 - c->self)
    abort();
  for (int i = 0; i < HB_CONFIG_NODES; i++) {
    const struct hb_config_node *n = &c->nodes[i];
    if (!n->name || !n->disk || !n->address || !n->host || !n->control || n->port == 0)
      abort();
    if (n->disk[0] != '/' || n->control[0] != '/')
      abort();
    if (n->meta && strcmp(n->meta, "internal") != 0 && n->meta[0] != '/')
      abort();
  }
  switch (c->tls) {
  case HB_TLS_CERT: if (!c->tls_ca || !c->tls_cert || !c->tls_key) abort(); break;
  case HB_TLS_PSK: if (!c->tls_psk) abort(); break;
  case HB_TLS_OFF: if (!c->tls_off_line) abort(); break;
  default: abort();
  }
  if (c->ping_timeout_ms <= c->ping_interval_ms)
    abort();
  if (c->size % HB_CONFIG_SIZE_ALIGN)
    abort();
  (void) hb_tls_mode_name(c->tls);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > (1u << 16))
    return 0;
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  char err[256], want[64] = "ha1";
  struct hb_config c;

  /* This node: the first [node NAME] in the text, if any. */
  const char *s = strstr(text, "[node ");
  if (s) {
    s += 6;
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strcspn(s, "] \t\r\n");
    if (n > 0 && n < sizeof want) {
      memcpy(want, s, n);
      want[n] = '\0';
    }
  }
  int r = hb_config_parse_string(text, "/etc/hablock/r0.conf", want, &c, err, sizeof err);
  if (r == 0)
    check_ok(&c);
  else if (!err[0] || strlen(err) >= sizeof err)
    abort();
  hb_config_free(&c);

  r = hb_config_parse_string(text, "conf/r0.conf", NULL, &c, err, sizeof err);
  if (r == 0)
    check_ok(&c);
  hb_config_free(&c);
  /* Tiny error buffer: must not overflow. */
  char tiny[4];
  r = hb_config_parse_string(text, "r0.conf", "b", &c, tiny, sizeof tiny);
  hb_config_free(&c);
  free(text);
  return 0;
}
