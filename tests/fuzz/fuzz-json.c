/* Fuzz target: the JSON reader and writer of the control protocol
 * (replicator/json.c). A parsed document must find each of its fields by
 * its path, and re-emitted with the writer must parse again; the writer
 * given raw bytes as a key or a value must emit valid JSON, one line, or
 * say -ENOSPC. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "fuzz.h"

static char outbuf[8192];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[256];
  struct hb_json_doc doc;
  char *text = malloc(size ? size : 1);   /* exact size: no NUL after it */
  memcpy(text, data, size);

  int r = hb_json_parse(text, size, &doc, err, sizeof err);
  if (r == 0) {
    bool found;
    int64_t iv;
    (void) hb_json_get_str(&doc, "cmd");
    (void) hb_json_get_bool(&doc, "force", &found);
    (void) hb_json_get_int(&doc, "code", &iv);
    (void) hb_json_get(&doc, "tls.version");
    (void) hb_json_get(&doc, "peers.0.name");
    (void) hb_json_get(&doc, "");
    struct hb_json_out o;
    hb_json_out_init(&o, outbuf, sizeof outbuf);
    unsigned open = 1;
    for (size_t k = 0; k < doc.nfields; k++) {
      const struct hb_json_field *f = &doc.fields[k];
      /* paths are unique, so get() finds each field itself */
      if (hb_json_get(&doc, f->path) != f) abort();
      if (f->depth >= HB_JSON_DEPTH_MAX) abort();
      if (strlen(f->path) > HB_JSON_PATH_MAX) abort();
      if (f->type == HB_JSON_STRING && (!f->s || strlen(f->s) != f->n)) abort();
      (void) hb_json_type_name(f->type);
      /* Re-emit the object members (flat) with the writer. */
      while (open > f->depth + 1) { hb_json_end_obj(&o); open--; }
      if (open < f->depth + 1) continue;  /* inside an array: skip */
      switch (f->type) {
      case HB_JSON_STRING: hb_json_add_str(&o, f->key, f->s); break;
      case HB_JSON_INT: hb_json_add_int(&o, f->key, f->i); break;
      case HB_JSON_BOOL: hb_json_add_bool(&o, f->key, f->b); break;
      case HB_JSON_NULL: hb_json_add_null(&o, f->key); break;
      case HB_JSON_OBJECT: hb_json_begin_obj(&o, f->key); open++; break;
      default: break;
      }
    }
    while (open > 1) { hb_json_end_obj(&o); open--; }
    int n = hb_json_out_end(&o);
    if (n > 0) {
      struct hb_json_doc d2;
      if (strlen(outbuf) != (size_t) n) abort();
      if (hb_json_parse(outbuf, (size_t) n, &d2, err, sizeof err) != 0) {
        fprintf(stderr, "writer output does not parse: %s\n%s\n", err, outbuf);
        abort();
      }
      hb_json_free(&d2);
    }
  } else if (r != -EINVAL && r != -ENOMEM) {
    abort();
  }
  hb_json_free(&doc);

  /* The writer on raw bytes as key and value: always valid JSON. */
  char *s = malloc(size + 1);
  memcpy(s, data, size);
  s[size] = '\0';
  struct hb_json_out o;
  size_t cap = size ? (size_t) (data[0] % 64) + 3 : sizeof outbuf;
  if (size && data[0] & 0x80) cap = sizeof outbuf;
  hb_json_out_init(&o, outbuf, cap);
  hb_json_add_str(&o, "v", s);
  hb_json_add_str(&o, s[0] ? s : "k", "x");
  int n = hb_json_out_end(&o);
  if (n > 0) {
    struct hb_json_doc d2;
    if ((size_t) n >= cap || strlen(outbuf) != (size_t) n) abort();
    if (memchr(outbuf, '\n', n)) abort();
    r = hb_json_parse(outbuf, (size_t) n, &d2, err, sizeof err);
    /* may legitimately fail: key with '.', duplicate, empty... but never for
       the value member alone */
    hb_json_free(&d2);
    hb_json_out_init(&o, outbuf, cap);
    hb_json_add_str(&o, "v", s);
    n = hb_json_out_end(&o);
    if (n > 0) {
      if (hb_json_parse(outbuf, (size_t) n, &d2, err, sizeof err) != 0) {
        fprintf(stderr, "writer output does not parse: %s\n", err);
        abort();
      }
      const char *v = hb_json_get_str(&d2, "v");
      if (!v) abort();
      /* valid-UTF-8 input without controls must come back unchanged */
      hb_json_free(&d2);
    }
  } else if (n != -ENOSPC) {
    abort();
  }
  free(s);
  free(text);
  return 0;
}
