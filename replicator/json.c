/* A small JSON reader and writer: see json.h. Pure, no I/O, no logging. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* Length of the valid UTF-8 sequence at S (AVAIL bytes available), or 0:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail)
{
  unsigned char c = s[0];
  size_t n;
  uint32_t cp;

  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (avail < n)
    return 0;
  for (size_t k = 1; k < n; k++) {
    if ((s[k] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[k] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

/* ---- reader ------------------------------------------------------------ */

struct parser {
  const char *start, *p, *end;
  struct hb_json_doc *doc;
  size_t cap;                          /* of doc->fields */
  char path[HB_JSON_PATH_MAX + 1];
  size_t pathlen;
  char *err;
  size_t errlen;
};

static int perr(struct parser *ps, const char *at, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

static int perr(struct parser *ps, const char *at, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (ps->err && ps->errlen) {
    n = snprintf(ps->err, ps->errlen, "at byte %td: ", at - ps->start);
    if (n >= 0 && (size_t) n < ps->errlen) {
      va_start(ap, fmt);
      vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
      va_end(ap);
    }
  }
  return -EINVAL;
}

/* What is at P, for messages: 'x', byte 0x01, or end of input. */
static const char *describe(struct parser *ps, const char *p, char *buf,
                            size_t len)
{
  unsigned char c;

  if (p >= ps->end)
    return "end of input";
  c = (unsigned char) *p;
  if (c > 0x20 && c < 0x7f && c != '\'')
    snprintf(buf, len, "'%c'", c);
  else
    snprintf(buf, len, "byte 0x%02x", c);
  return buf;
}

static int expected(struct parser *ps, const char *what)
{
  char b[16];
  return perr(ps, ps->p, "expected %s, got %s", what,
              describe(ps, ps->p, b, sizeof b));
}

static void skip_ws(struct parser *ps)
{
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static int push_path(struct parser *ps, const char *comp, size_t len,
                     const char *at, size_t *saved)
{
  size_t need = len + (ps->pathlen ? 1 : 0);

  *saved = ps->pathlen;
  if (ps->pathlen + need > HB_JSON_PATH_MAX)
    return perr(ps, at, "path of a member longer than %d bytes",
                HB_JSON_PATH_MAX);
  if (ps->pathlen)
    ps->path[ps->pathlen++] = '.';
  memcpy(ps->path + ps->pathlen, comp, len);
  ps->pathlen += len;
  ps->path[ps->pathlen] = '\0';
  return 0;
}

static void pop_path(struct parser *ps, size_t saved)
{
  ps->pathlen = saved;
  ps->path[saved] = '\0';
}

/* Append a field named by the current path; returns its index or -errno. */
static long add_field(struct parser *ps, unsigned depth, const char *at)
{
  struct hb_json_doc *d = ps->doc;
  struct hb_json_field *f;
  char *dot;

  if (d->nfields == HB_JSON_FIELDS_MAX)
    return perr(ps, at, "more than %d members", HB_JSON_FIELDS_MAX);
  if (d->nfields == ps->cap) {
    size_t ncap = ps->cap ? ps->cap * 2 : 16;
    struct hb_json_field *nf = realloc(d->fields, ncap * sizeof *nf);
    if (!nf)
      return -ENOMEM;
    d->fields = nf;
    ps->cap = ncap;
  }
  f = &d->fields[d->nfields];
  memset(f, 0, sizeof *f);
  f->path = strdup(ps->path);
  if (!f->path)
    return -ENOMEM;
  dot = strrchr(f->path, '.');
  f->key = dot ? dot + 1 : f->path;
  f->depth = depth;
  return (long) d->nfields++;
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Four hex digits at P (which must have them), or -1. */
static long hex4(struct parser *ps, const char *p)
{
  long v = 0;

  if (ps->end - p < 4)
    return -1;
  for (int k = 0; k < 4; k++) {
    int h = hexval(p[k]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  return v;
}

static size_t put_utf8(char *out, uint32_t cp)
{
  if (cp < 0x80) {
    out[0] = (char) cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char) (0xc0 | (cp >> 6));
    out[1] = (char) (0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char) (0xe0 | (cp >> 12));
    out[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char) (0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char) (0xf0 | (cp >> 18));
  out[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char) (0x80 | (cp & 0x3f));
  return 4;
}

/* One escape sequence after the backslash at *PP; writes UTF-8 to OUT. */
static int parse_escape(struct parser *ps, const char **pp, char *out,
                        size_t *outlen)
{
  const char *bs = *pp - 1, *p = *pp;
  long hi, lo;
  uint32_t cp;

  if (p >= ps->end)
    return perr(ps, bs, "unterminated string");
  switch (*p) {
  case '"':  out[0] = '"'; break;
  case '\\': out[0] = '\\'; break;
  case '/':  out[0] = '/'; break;
  case 'b':  out[0] = '\b'; break;
  case 'f':  out[0] = '\f'; break;
  case 'n':  out[0] = '\n'; break;
  case 'r':  out[0] = '\r'; break;
  case 't':  out[0] = '\t'; break;
  case 'u':
    hi = hex4(ps, p + 1);
    if (hi < 0)
      return perr(ps, bs, "\\u must be followed by four hex digits");
    p += 5;
    if (hi == 0)
      return perr(ps, bs, "\\u0000 (NUL) is not allowed in a string");
    if (hi >= 0xdc00 && hi <= 0xdfff)
      return perr(ps, bs, "lone low surrogate \\u%04lx", hi);
    cp = (uint32_t) hi;
    if (hi >= 0xd800 && hi <= 0xdbff) {
      lo = (ps->end - p >= 6 && p[0] == '\\' && p[1] == 'u') ? hex4(ps, p + 2) : -1;
      if (lo < 0xdc00 || lo > 0xdfff)
        return perr(ps, bs, "high surrogate \\u%04lx not followed by a low one", hi);
      cp = 0x10000 + (((uint32_t) hi - 0xd800) << 10) + ((uint32_t) lo - 0xdc00);
      p += 6;
    }
    *outlen = put_utf8(out, cp);
    *pp = p;
    return 0;
  default: {
      char b[16];
      return perr(ps, bs, "invalid escape \\ followed by %s",
                  describe(ps, p, b, sizeof b));
    }
  }
  *outlen = 1;
  *pp = p + 1;
  return 0;
}

/* A string at ps->p (on its '"'): *OUT gets a malloc'ed NUL-terminated
 * copy, *LEN its length. */
static int parse_string(struct parser *ps, char **out, size_t *len)
{
  const char *open = ps->p, *p = ps->p + 1, *q;
  char *s;
  size_t n = 0;
  int r;

  /* Find the closing quote first, so that the copy is no bigger than the
   * string (an escape never decodes to more bytes than it takes). */
  for (q = p; q < ps->end && *q != '"'; q++)
    if (*q == '\\' && q + 1 < ps->end)
      q++;
  if (q >= ps->end)
    return perr(ps, open, "unterminated string");
  s = malloc(q - p + 1);
  if (!s)
    return -ENOMEM;
  while (p < q) {
    unsigned char c = (unsigned char) *p;
    if (c == '\\') {
      size_t k = 0;
      p++;
      r = parse_escape(ps, &p, s + n, &k);
      if (r < 0)
        goto fail;
      n += k;
    } else if (c < 0x20) {
      r = c == 0 ? perr(ps, p, "NUL byte in a string")
                 : perr(ps, p, "raw control character 0x%02x in a string", c);
      goto fail;
    } else {
      size_t k = utf8_seq_len((const unsigned char *) p, q - p);
      if (k == 0) {
        r = perr(ps, p, "invalid UTF-8 in a string");
        goto fail;
      }
      memcpy(s + n, p, k);
      n += k;
      p += k;
    }
  }
  s[n] = '\0';
  ps->p = q + 1;
  *out = s;
  *len = n;
  return 0;
fail:
  free(s);
  return r;
}

static int parse_number(struct parser *ps, struct hb_json_field *f)
{
  const char *b = ps->p, *p = ps->p;
  bool neg = false, integer = true;
  uint64_t mag = 0;
  char tmp[64];

  if (*p == '-') {
    neg = true;
    p++;
  }
  if (p >= ps->end || *p < '0' || *p > '9')
    return perr(ps, b, "a number needs a digit after '-'");
  if (*p == '0' && p + 1 < ps->end && p[1] >= '0' && p[1] <= '9')
    return perr(ps, b, "a number may not start with 0");
  for (; p < ps->end && *p >= '0' && *p <= '9'; p++) {
    unsigned dgt = (unsigned) (*p - '0');
    if (mag > (UINT64_MAX - dgt) / 10)
      mag = UINT64_MAX;           /* saturate: out of range below */
    else
      mag = mag * 10 + dgt;
  }
  if (p < ps->end && *p == '.') {
    integer = false;
    p++;
    if (p >= ps->end || *p < '0' || *p > '9')
      return perr(ps, b, "a number needs a digit after '.'");
    while (p < ps->end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < ps->end && (*p == 'e' || *p == 'E')) {
    integer = false;
    p++;
    if (p < ps->end && (*p == '+' || *p == '-'))
      p++;
    if (p >= ps->end || *p < '0' || *p > '9')
      return perr(ps, b, "a number needs a digit in its exponent");
    while (p < ps->end && *p >= '0' && *p <= '9')
      p++;
  }
  if (integer) {
    if ((!neg && mag > (uint64_t) INT64_MAX) ||
        (neg && mag > (uint64_t) INT64_MAX + 1))
      return perr(ps, b, "integer out of range");
    f->type = HB_JSON_INT;
    f->i = neg ? (int64_t) (0 - mag) : (int64_t) mag;
    f->d = (double) f->i;
  } else {
    if ((size_t) (p - b) >= sizeof tmp)
      return perr(ps, b, "number longer than %zu characters", sizeof tmp - 1);
    memcpy(tmp, b, p - b);
    tmp[p - b] = '\0';
    f->type = HB_JSON_NUMBER;
    f->d = strtod(tmp, NULL);
  }
  ps->p = p;
  return 0;
}

static int parse_container(struct parser *ps, unsigned depth, size_t *count);

static int parse_literal(struct parser *ps, const char *word)
{
  size_t n = strlen(word);

  if ((size_t) (ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
    return expected(ps, "a value");
  ps->p += n;
  return 0;
}

/* The value at ps->p for the field at index IDX (at DEPTH). */
static int parse_value(struct parser *ps, size_t idx, unsigned depth)
{
  struct hb_json_field *f = &ps->doc->fields[idx];
  size_t n;
  char *s;
  int r;

  if (ps->p >= ps->end)
    return expected(ps, "a value");
  switch (*ps->p) {
  case '{':
  case '[':
    f->type = *ps->p == '{' ? HB_JSON_OBJECT : HB_JSON_ARRAY;
    r = parse_container(ps, depth + 1, &n);
    /* fields may have moved */
    if (r == 0)
      ps->doc->fields[idx].n = n;
    return r;
  case '"':
    r = parse_string(ps, &s, &n);
    if (r < 0)
      return r;
    f->type = HB_JSON_STRING;
    f->s = s;
    f->n = n;
    return 0;
  case 't':
  case 'f':
    f->type = HB_JSON_BOOL;
    f->b = *ps->p == 't';
    return parse_literal(ps, f->b ? "true" : "false");
  case 'n':
    f->type = HB_JSON_NULL;
    return parse_literal(ps, "null");
  default:
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
      return parse_number(ps, f);
    return expected(ps, "a value");
  }
}

/* One member of an object: "key": value. FIRST is the index of the
 * object's first member (for the duplicate check). */
static int parse_member(struct parser *ps, unsigned depth, size_t first)
{
  const char *at = ps->p;
  size_t klen, saved;
  char *key;
  long idx;
  int r;

  if (ps->p >= ps->end || *ps->p != '"')
    return expected(ps, "a string key");
  r = parse_string(ps, &key, &klen);
  if (r < 0)
    return r;
  if (klen == 0 || memchr(key, '.', klen)) {
    free(key);
    return perr(ps, at, klen ? "a key may not contain '.'" : "empty key");
  }
  r = push_path(ps, key, klen, at, &saved);
  free(key);
  if (r < 0)
    return r;
  for (size_t k = first; k < ps->doc->nfields; k++)
    if (strcmp(ps->doc->fields[k].path, ps->path) == 0)
      return perr(ps, at, "duplicate key \"%s\"", ps->doc->fields[k].key);
  skip_ws(ps);
  if (ps->p >= ps->end || *ps->p != ':')
    return expected(ps, "':'");
  ps->p++;
  skip_ws(ps);
  idx = add_field(ps, depth - 1, ps->p);
  if (idx < 0)
    return (int) idx;
  r = parse_value(ps, (size_t) idx, depth);
  pop_path(ps, saved);
  return r;
}

static int parse_element(struct parser *ps, unsigned depth, size_t i)
{
  char comp[24];
  size_t saved;
  long idx;
  int r;

  r = push_path(ps, comp, (size_t) snprintf(comp, sizeof comp, "%zu", i),
                ps->p, &saved);
  if (r < 0)
    return r;
  idx = add_field(ps, depth - 1, ps->p);
  if (idx < 0)
    return (int) idx;
  r = parse_value(ps, (size_t) idx, depth);
  pop_path(ps, saved);
  return r;
}

/* An object or an array at ps->p; DEPTH counts it. *COUNT gets its number
 * of members or elements. */
static int parse_container(struct parser *ps, unsigned depth, size_t *count)
{
  bool object = *ps->p == '{';
  char close = object ? '}' : ']';
  size_t first = ps->doc->nfields, n = 0;
  int r;

  if (depth > HB_JSON_DEPTH_MAX)
    return perr(ps, ps->p, "nested deeper than %d levels", HB_JSON_DEPTH_MAX);
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    *count = 0;
    return 0;
  }
  for (;;) {
    r = object ? parse_member(ps, depth, first) : parse_element(ps, depth, n);
    if (r < 0)
      return r;
    n++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      skip_ws(ps);
      continue;
    }
    if (ps->p < ps->end && *ps->p == close) {
      ps->p++;
      *count = n;
      return 0;
    }
    return expected(ps, object ? "',' or '}'" : "',' or ']'");
  }
}

int hb_json_parse(const char *text, size_t len, struct hb_json_doc *doc,
                  char *err, size_t errlen)
{
  struct parser ps = {
    .start = text, .p = text, .end = text + len, .doc = doc,
    .err = err, .errlen = errlen,
  };
  size_t n;
  int r;

  doc->fields = NULL;
  doc->nfields = 0;
  skip_ws(&ps);
  if (ps.p >= ps.end || *ps.p != '{')
    r = expected(&ps, "'{' (a JSON object)");
  else
    r = parse_container(&ps, 1, &n);
  if (r == 0) {
    skip_ws(&ps);
    if (ps.p < ps.end) {
      char b[16];
      r = perr(&ps, ps.p, "%s after the object",
               describe(&ps, ps.p, b, sizeof b));
    }
  }
  if (r == -ENOMEM && err && errlen)
    snprintf(err, errlen, "out of memory");
  if (r < 0)
    hb_json_free(doc);
  return r;
}

void hb_json_free(struct hb_json_doc *doc)
{
  for (size_t k = 0; k < doc->nfields; k++) {
    free(doc->fields[k].path);
    free(doc->fields[k].s);
  }
  free(doc->fields);
  doc->fields = NULL;
  doc->nfields = 0;
}

const struct hb_json_field *hb_json_get(const struct hb_json_doc *doc,
                                        const char *path)
{
  for (size_t k = 0; k < doc->nfields; k++)
    if (strcmp(doc->fields[k].path, path) == 0)
      return &doc->fields[k];
  return NULL;
}

const char *hb_json_get_str(const struct hb_json_doc *doc, const char *path)
{
  const struct hb_json_field *f = hb_json_get(doc, path);
  return f && f->type == HB_JSON_STRING ? f->s : NULL;
}

bool hb_json_get_bool(const struct hb_json_doc *doc, const char *path,
                      bool *found)
{
  const struct hb_json_field *f = hb_json_get(doc, path);
  bool ok = f && f->type == HB_JSON_BOOL;

  if (found)
    *found = ok;
  return ok && f->b;
}

bool hb_json_get_int(const struct hb_json_doc *doc, const char *path,
                     int64_t *value)
{
  const struct hb_json_field *f = hb_json_get(doc, path);

  if (!f || f->type != HB_JSON_INT)
    return false;
  *value = f->i;
  return true;
}

const char *hb_json_type_name(enum hb_json_type t)
{
  switch (t) {
  case HB_JSON_NULL:   return "null";
  case HB_JSON_BOOL:   return "boolean";
  case HB_JSON_INT:    return "integer";
  case HB_JSON_NUMBER: return "number";
  case HB_JSON_STRING: return "string";
  case HB_JSON_OBJECT: return "object";
  case HB_JSON_ARRAY:  return "array";
  }
  return "?";
}

/* ---- writer ------------------------------------------------------------ */

static void put(struct hb_json_out *o, const char *s, size_t n)
{
  if (o->err)
    return;
  if (n >= o->cap - o->len) {
    o->err = -ENOSPC;
    return;
  }
  memcpy(o->buf + o->len, s, n);
  o->len += n;
  o->buf[o->len] = '\0';
}

static void put_quoted(struct hb_json_out *o, const char *s)
{
  const unsigned char *p = (const unsigned char *) s;
  size_t avail = strlen(s);
  char esc[8];

  put(o, "\"", 1);
  while (avail && !o->err) {
    /* The longest run that needs no escaping goes out in one piece. */
    size_t run = 0, k;
    while (run < avail && p[run] >= 0x20 && p[run] < 0x7f &&
           p[run] != '"' && p[run] != '\\')
      run++;
    if (run) {
      put(o, (const char *) p, run);
      p += run;
      avail -= run;
      continue;
    }
    switch (*p) {
    case '"':  put(o, "\\\"", 2); break;
    case '\\': put(o, "\\\\", 2); break;
    case '\b': put(o, "\\b", 2); break;
    case '\f': put(o, "\\f", 2); break;
    case '\n': put(o, "\\n", 2); break;
    case '\r': put(o, "\\r", 2); break;
    case '\t': put(o, "\\t", 2); break;
    default:
      if (*p < 0x80) {                /* other controls and DEL */
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        put(o, esc, 6);
        break;
      }
      k = utf8_seq_len(p, avail);
      if (k == 0) {
        put(o, "\\ufffd", 6);         /* one invalid byte */
        break;
      }
      put(o, (const char *) p, k);
      p += k;
      avail -= k;
      continue;
    }
    p++;
    avail--;
  }
  put(o, "\"", 1);
}

/* The "key": part of a new member of the innermost object. */
static void member(struct hb_json_out *o, const char *key)
{
  if (o->err)
    return;
  if (!key || o->depth == 0) {
    o->err = -EINVAL;
    return;
  }
  if (!o->empty[o->depth - 1])
    put(o, ",", 1);
  o->empty[o->depth - 1] = false;
  put_quoted(o, key);
  put(o, ":", 1);
}

void hb_json_out_init(struct hb_json_out *o, char *buf, size_t cap)
{
  memset(o, 0, sizeof *o);
  o->buf = buf;
  o->cap = cap > INT_MAX ? INT_MAX : cap;
  if (o->cap < 3) {
    o->err = -ENOSPC;
    if (o->cap)
      buf[0] = '\0';
    return;
  }
  put(o, "{", 1);
  o->depth = 1;
  o->empty[0] = true;
}

void hb_json_add_str(struct hb_json_out *o, const char *key, const char *val)
{
  member(o, key);
  if (val)
    put_quoted(o, val);
  else
    put(o, "null", 4);
}

void hb_json_add_int(struct hb_json_out *o, const char *key, int64_t val)
{
  char num[24];
  int n = snprintf(num, sizeof num, "%" PRId64, val);

  member(o, key);
  put(o, num, (size_t) n);
}

void hb_json_add_bool(struct hb_json_out *o, const char *key, bool val)
{
  member(o, key);
  if (val)
    put(o, "true", 4);
  else
    put(o, "false", 5);
}

void hb_json_add_null(struct hb_json_out *o, const char *key)
{
  member(o, key);
  put(o, "null", 4);
}

void hb_json_begin_obj(struct hb_json_out *o, const char *key)
{
  member(o, key);
  if (o->err)
    return;
  if (o->depth == HB_JSON_DEPTH_MAX) {
    o->err = -EINVAL;
    return;
  }
  put(o, "{", 1);
  o->empty[o->depth++] = true;
}

void hb_json_end_obj(struct hb_json_out *o)
{
  if (o->err)
    return;
  if (o->depth <= 1) {
    o->err = -EINVAL;
    return;
  }
  put(o, "}", 1);
  o->depth--;
}

int hb_json_out_end(struct hb_json_out *o)
{
  if (!o->err && o->depth != 1)
    o->err = -EINVAL;
  put(o, "}", 1);
  if (o->err) {
    if (o->cap)
      o->buf[0] = '\0';
    return o->err;
  }
  o->depth = 0;
  return (int) o->len;
}
