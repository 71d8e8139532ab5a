/* A small JSON reader and writer for the control socket (ctl.c) and hactl.
 * Pure: no I/O, no logging; the reader allocates, the writer does not.
 *
 * The control protocol exchanges one JSON object per line. Objects are
 * small and nearly flat, so the reader does not build a tree: it flattens
 * the document into a list of fields named by their path, the members of a
 * nested object joined with '.' ("tls.version") and the elements of an
 * array numbered ("peers.0.name"). Objects and arrays appear in the list
 * too (type HB_JSON_OBJECT / HB_JSON_ARRAY) before their members, so a
 * caller can tell "tls is an object" from "tls is missing" and can refuse a
 * value of the wrong type by name. Each field records its depth (0 for a
 * member of the top-level object).
 *
 * The reader is strict (RFC 8259, and more): the text must be exactly one
 * object, surrounded by optional whitespace; strings must be valid UTF-8
 * without NUL (raw or \u0000) and without raw control characters; a
 * surrogate escape must be a pair; an object may not repeat a key; nesting
 * is limited to HB_JSON_DEPTH_MAX, the number of fields to
 * HB_JSON_FIELDS_MAX, a path to HB_JSON_PATH_MAX bytes. Integers must fit
 * in int64_t; a number with a fraction or an exponent is HB_JSON_NUMBER (a
 * double). Every refusal is -EINVAL with one line naming the problem and
 * its byte offset ("at byte 12: unterminated string"); -ENOMEM is the only
 * other failure.
 *
 * The writer fills a caller's buffer with one object. The caller adds
 * members; hb_json_out_end() closes the object. The first error (no room,
 * nesting misuse, a NULL key) is sticky: later calls do nothing and
 * hb_json_out_end() returns it, so a producer need not check each call.
 * Strings are escaped so that the output is always valid JSON and valid
 * UTF-8, whatever the input bytes: '"', '\\' and control characters are
 * escaped, valid UTF-8 passes through, each byte of an invalid sequence
 * becomes U+FFFD. The output holds no newline (one object per line).
 */
#ifndef HB_JSON_H
#define HB_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HB_JSON_DEPTH_MAX  8     /* nested objects and arrays, the top one included */
#define HB_JSON_FIELDS_MAX 1024
#define HB_JSON_PATH_MAX   256   /* bytes of a field's path, NUL excluded */

/* ---- reader ------------------------------------------------------------ */

enum hb_json_type {
  HB_JSON_NULL,
  HB_JSON_BOOL,
  HB_JSON_INT,      /* an integer that fits int64_t */
  HB_JSON_NUMBER,   /* a number with a fraction or an exponent */
  HB_JSON_STRING,
  HB_JSON_OBJECT,   /* its members follow, with paths "this.member" */
  HB_JSON_ARRAY,    /* its elements follow, with paths "this.0", "this.1" */
};

struct hb_json_field {
  char *path;       /* NUL-terminated, "." between levels */
  const char *key;  /* the last component of path (points into it) */
  unsigned depth;   /* 0 for a member of the top-level object */
  enum hb_json_type type;
  bool b;           /* HB_JSON_BOOL */
  int64_t i;        /* HB_JSON_INT */
  double d;         /* HB_JSON_NUMBER (and HB_JSON_INT, converted) */
  char *s;          /* HB_JSON_STRING: NUL-terminated UTF-8, no NUL inside */
  size_t n;         /* HB_JSON_STRING: length; OBJECT, ARRAY: members */
};

struct hb_json_doc {
  struct hb_json_field *fields;  /* in document order */
  size_t nfields;
};

/* Parse LEN bytes of TEXT (need not be NUL-terminated; a NUL inside is an
 * error). On success fills DOC, to be released with hb_json_free(). On
 * failure DOC is left empty (hb_json_free() is still safe) and ERR holds
 * one line. */
int hb_json_parse(const char *text, size_t len, struct hb_json_doc *doc,
                  char *err, size_t errlen);
void hb_json_free(struct hb_json_doc *doc);

/* The field at PATH ("tls.version"), or NULL. */
const struct hb_json_field *hb_json_get(const struct hb_json_doc *doc,
                                        const char *path);
/* Convenience lookups: the value at PATH if it has that type, else NULL /
 * false (*found tells which, and may be NULL). */
const char *hb_json_get_str(const struct hb_json_doc *doc, const char *path);
bool hb_json_get_bool(const struct hb_json_doc *doc, const char *path,
                      bool *found);
bool hb_json_get_int(const struct hb_json_doc *doc, const char *path,
                     int64_t *value);

/* "string", "integer", ... for messages. */
const char *hb_json_type_name(enum hb_json_type t);

/* ---- writer ------------------------------------------------------------ */

struct hb_json_out {
  char *buf;
  size_t cap;       /* bytes of buf, the terminating NUL included */
  size_t len;       /* bytes written so far, NUL excluded */
  unsigned depth;   /* open objects, the top-level one included */
  bool empty[HB_JSON_DEPTH_MAX];  /* no member yet at this depth */
  int err;          /* first error: 0, -ENOSPC, -EINVAL */
};

/* Start an object in BUF (CAP bytes, at least 3: "{}" and the NUL). */
void hb_json_out_init(struct hb_json_out *o, char *buf, size_t cap);
/* Add a member to the innermost open object. A NULL string is null. */
void hb_json_add_str(struct hb_json_out *o, const char *key, const char *val);
void hb_json_add_int(struct hb_json_out *o, const char *key, int64_t val);
void hb_json_add_bool(struct hb_json_out *o, const char *key, bool val);
void hb_json_add_null(struct hb_json_out *o, const char *key);
/* Open a nested object as member KEY; close it with hb_json_end_obj(). */
void hb_json_begin_obj(struct hb_json_out *o, const char *key);
void hb_json_end_obj(struct hb_json_out *o);
/* Close the top-level object. Returns the length of the NUL-terminated
 * text in buf, or the first error: -ENOSPC (did not fit), -EINVAL (a
 * NULL key, an object left open or closed once too often, too deep). */
int hb_json_out_end(struct hb_json_out *o);

#endif
