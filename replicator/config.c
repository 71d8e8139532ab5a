/* The resource configuration file: pure parsing (see config.h).
 *
 * inih splits the file into sections and key = value pairs; this file
 * feeds it one line at a time through ini_parse_stream() and keeps its own
 * line count and its own idea of the current section:
 *
 * - Line numbers: Debian's libinih 55 is built with INI_HANDLER_LINENO=1
 *   (its handler call passes the line as a fifth argument) while the
 *   installed ini.h and inih.pc do not define it, so whether the handler
 *   gets a line number depends on the build. Our reader counts lines
 *   instead, and the handler uses the four-argument type of the header as
 *   shipped (an extra register argument is harmless in the x86-64 and
 *   AArch64 calling conventions).
 * - Sections: inih calls the handler only for keys, so an empty section
 *   would go unseen, and it truncates section names to 50 bytes. The reader
 *   handles section header lines itself.
 * - Indentation: inih treats an indented line after a key as the
 *   continuation of that key's value. The reader strips leading white
 *   space, so indented keys are ordinary keys and values never continue.
 * - Long lines: inih silently splits a line longer than its buffer. The
 *   reader refuses it.
 *
 * Values are checked as they are read, so their errors carry their line;
 * what needs the whole file (required keys, TLS choices, which node is
 * this one, paths with %n) is checked at the end.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <ini.h>

#include "config.h"
#include "tls.h"

/* One key's raw value as read, with where it was set. */
struct setting {
  char *value;
  unsigned line;              /* 0: not set */
  const struct key *by;       /* the key that set it (tls is an alias) */
  uint64_t num;               /* parsed number, for those that have one */
};

struct raw_node {
  char *name;
  unsigned line;
  struct setting disk, meta, address, control;
};

struct raw_global {
  struct setting name, protocol, control, size;
  struct setting ping_interval, ping_timeout, connect_timeout, request_timeout;
  struct setting tls_mode, ca, cert, key, psk, suites;
};

enum section { SEC_NONE, SEC_RESOURCE, SEC_TLS, SEC_NODE };

enum vtype { V_NAME, V_PROTOCOL, V_PATH, V_META, V_DURATION, V_SIZE,
             V_ADDRESS, V_ONOFF, V_SUITES };

struct key {
  enum section sec;
  const char *name;
  enum vtype type;
  size_t off;                 /* of its struct setting in raw_global/node */
};

#define G(f) offsetof(struct raw_global, f)
#define N(f) offsetof(struct raw_node, f)
static const struct key keys[] = {
  { SEC_RESOURCE, "name",            V_NAME,     G(name) },
  { SEC_RESOURCE, "protocol",        V_PROTOCOL, G(protocol) },
  { SEC_RESOURCE, "control",         V_PATH,     G(control) },
  { SEC_RESOURCE, "size",            V_SIZE,     G(size) },
  { SEC_RESOURCE, "ping-interval",   V_DURATION, G(ping_interval) },
  { SEC_RESOURCE, "ping-timeout",    V_DURATION, G(ping_timeout) },
  { SEC_RESOURCE, "connect-timeout", V_DURATION, G(connect_timeout) },
  { SEC_RESOURCE, "request-timeout", V_DURATION, G(request_timeout) },
  { SEC_RESOURCE, "tls",             V_ONOFF,    G(tls_mode) },
  { SEC_TLS,      "mode",            V_ONOFF,    G(tls_mode) },
  { SEC_TLS,      "ca",              V_PATH,     G(ca) },
  { SEC_TLS,      "cert",            V_PATH,     G(cert) },
  { SEC_TLS,      "key",             V_PATH,     G(key) },
  { SEC_TLS,      "psk",             V_PATH,     G(psk) },
  { SEC_TLS,      "ciphersuites",    V_SUITES,   G(suites) },
  { SEC_NODE,     "disk",            V_PATH,     N(disk) },
  { SEC_NODE,     "meta",            V_META,     N(meta) },
  { SEC_NODE,     "address",         V_ADDRESS,  N(address) },
  { SEC_NODE,     "control",         V_PATH,     N(control) },
};
#undef G
#undef N

static const char *const section_names[] = {
  [SEC_NONE] = "", [SEC_RESOURCE] = "resource", [SEC_TLS] = "tls",
  [SEC_NODE] = "node",
};

struct parser {
  const char *file;           /* for messages */
  const char *text;           /* the reader's input and position */
  size_t pos;
  unsigned line;              /* the line inih is handling */

  enum section sec;           /* the current section */
  struct raw_node *node;      /* when sec == SEC_NODE */
  char secname[HB_CONFIG_NAME_MAX + 8]; /* "[node NAME]", for messages */

  unsigned resource_line, tls_line;
  struct raw_global g;
  struct raw_node nodes[HB_CONFIG_NODES];
  unsigned nnodes;

  int err;                    /* first error, -errno; 0: none yet */
  unsigned errline;           /* its line; UINT_MAX when it has none */
  char *errbuf;
  size_t errlen;
};

/* Record the first error only: "FILE:LINE: message" (no LINE if 0). */
__attribute__((format(printf, 4, 5)))
static int fail(struct parser *p, unsigned line, int errnum,
                const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  if (p->err)
    return p->err;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (p->errbuf && p->errlen) {
    if (line)
      snprintf(p->errbuf, p->errlen, "%s:%u: %s", p->file, line, msg);
    else
      snprintf(p->errbuf, p->errlen, "%s: %s", p->file, msg);
  }
  p->err = -errnum;
  p->errline = line ? line : UINT_MAX;
  return p->err;
}

/* ---- values ---------------------------------------------------------- */

static bool is_blank(char c)
{
  return c == ' ' || c == '\t' || c == '\r';
}

/* Resource and node names: they end up in paths and in certificates. */
static bool valid_name(const char *s)
{
  size_t n = strlen(s);

  if (n == 0 || n > HB_CONFIG_NAME_MAX || !isalnum((unsigned char) s[0]))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char) s[i]) && !strchr("._-", s[i]))
      return false;
  return true;
}

#define NAME_RULE "letters, digits, '.', '-' and '_', starting with a " \
  "letter or digit, at most 63"

static bool parse_uint(const char **s, unsigned long long *out)
{
  char *end;

  if (!isdigit((unsigned char) **s))
    return false;
  errno = 0;
  *out = strtoull(*s, &end, 10);
  if (errno)
    *out = ULLONG_MAX;
  *s = end;
  while (is_blank(**s))
    (*s)++;
  return true;
}

static bool check_duration(const char *v, uint64_t *ms, char *why, size_t n)
{
  static const struct { const char *unit; unsigned ms; } units[] = {
    { "ms", 1 }, { "s", 1000 }, { "min", 60000 },
  };
  unsigned long long x;
  const char *s = v;

  if (!parse_uint(&s, &x)) {
    snprintf(why, n, "expected a duration such as 500ms or 5s");
    return false;
  }
  if (!*s) {
    snprintf(why, n, "missing unit (ms, s or min)");
    return false;
  }
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(s, units[i].unit) != 0)
      continue;
    if (x == 0) {
      snprintf(why, n, "must be positive");
      return false;
    }
    if (x > HB_CONFIG_DURATION_MAX / units[i].ms) {
      snprintf(why, n, "too long (at most %us)", HB_CONFIG_DURATION_MAX / 1000);
      return false;
    }
    *ms = x * units[i].ms;
    return true;
  }
  snprintf(why, n, "unknown unit '%s' (ms, s or min)", s);
  return false;
}

static bool check_size(const char *v, uint64_t *bytes, char *why, size_t n)
{
  static const struct { const char *unit; unsigned shift; } units[] = {
    { "", 0 }, { "K", 10 }, { "KiB", 10 }, { "M", 20 }, { "MiB", 20 },
    { "G", 30 }, { "GiB", 30 }, { "T", 40 }, { "TiB", 40 },
  };
  unsigned long long x;
  const char *s = v;

  if (!parse_uint(&s, &x)) {
    snprintf(why, n, "expected a size such as 10G or 1048576");
    return false;
  }
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(s, units[i].unit) != 0)
      continue;
    if (x == 0) {
      snprintf(why, n, "must be positive");
      return false;
    }
    if (x > (unsigned long long) INT64_MAX >> units[i].shift) {
      snprintf(why, n, "too large");
      return false;
    }
    x <<= units[i].shift;
    if (x % HB_CONFIG_SIZE_ALIGN) {
      snprintf(why, n, "must be a multiple of %u bytes", HB_CONFIG_SIZE_ALIGN);
      return false;
    }
    *bytes = x;
    return true;
  }
  snprintf(why, n, "unknown unit '%s' (K, M, G or T; 1K = 1024)", s);
  return false;
}

static bool valid_hostname(const char *h, size_t len)
{
  size_t label = 0;

  if (len == 0 || len > 253)
    return false;
  for (size_t i = 0; i < len; i++) {
    if (h[i] == '.') {
      if (label == 0)
        return false;
      label = 0;
    } else if (isalnum((unsigned char) h[i]) || h[i] == '-' || h[i] == '_') {
      if (++label > 63)
        return false;
    } else {
      return false;
    }
  }
  return true;
}

/* HOST:PORT, [IPV6]:PORT or [IPV6%ZONE]:PORT. HOST and PORT may be NULL. */
static bool parse_address(const char *v, char **host, uint16_t *port,
                          char *why, size_t n)
{
  const char *h, *hend, *ps;
  unsigned long long x;
  char buf[128];

  if (*v == '[') {
    h = v + 1;
    hend = strchr(h, ']');
    if (!hend) {
      snprintf(why, n, "missing ']' after the IPv6 address");
      return false;
    }
    if (hend == h) {
      snprintf(why, n, "missing host");
      return false;
    }
    if ((size_t) (hend - h) >= sizeof buf) {
      snprintf(why, n, "bad IPv6 address");
      return false;
    }
    memcpy(buf, h, hend - h);
    buf[hend - h] = '\0';
    char *zone = strchr(buf, '%');
    if (zone)
      *zone++ = '\0';
    struct in6_addr a6;
    if (inet_pton(AF_INET6, buf, &a6) != 1 ||
        (zone && !valid_hostname(zone, strlen(zone)))) {
      snprintf(why, n, "bad IPv6 address '%.*s'", (int) (hend - h), h);
      return false;
    }
    if (hend[1] == '\0') {
      snprintf(why, n, "missing port");
      return false;
    }
    if (hend[1] != ':') {
      snprintf(why, n, "expected ':PORT' after ']'");
      return false;
    }
    ps = hend + 2;
  } else {
    const char *colon = strrchr(v, ':');
    if (!colon) {
      snprintf(why, n, "missing port");
      return false;
    }
    if (memchr(v, ':', colon - v)) {
      snprintf(why, n, "an IPv6 address needs brackets, as in [fe80::1]:7789");
      return false;
    }
    h = v;
    hend = colon;
    if (hend == h) {
      snprintf(why, n, "missing host");
      return false;
    }
    size_t len = hend - h;
    if (strspn(h, "0123456789.") >= len) {
      struct in_addr a4;
      if (len >= sizeof buf)
        len = sizeof buf - 1;
      memcpy(buf, h, len);
      buf[len] = '\0';
      if (inet_pton(AF_INET, buf, &a4) != 1) {
        snprintf(why, n, "bad IPv4 address '%.*s'", (int) (hend - h), h);
        return false;
      }
    } else if (!valid_hostname(h, len)) {
      snprintf(why, n, "bad host name '%.*s'", (int) len, h);
      return false;
    }
    ps = colon + 1;
  }
  if (!*ps) {
    snprintf(why, n, "missing port");
    return false;
  }
  const char *s = ps;
  if (!parse_uint(&s, &x) || *s || x < 1 || x > 65535) {
    snprintf(why, n, "bad port '%s' (expected 1 to 65535)", ps);
    return false;
  }
  if (port)
    *port = (uint16_t) x;
  if (host) {
    *host = strndup(h, hend - h);
    if (!*host) {
      snprintf(why, n, "out of memory");
      return false;
    }
  }
  return true;
}

static bool check_path(const char *v, char *why, size_t n)
{
  if (*v == '"' || *v == '\'') {
    snprintf(why, n, "quotes are not needed: write the path as it is");
    return false;
  }
  for (const char *s = v; (s = strchr(s, '%')); s += 2) {
    if (s[1] != 'n' && s[1] != '%') {
      snprintf(why, n, "bad escape '%%%.1s' (only %%n and %%%% are expanded)",
               s + 1);
      return false;
    }
  }
  return true;
}

/* Check V as a value of type T; fill *num for the numeric ones. */
static bool check_value(enum vtype t, const char *v, uint64_t *num,
                        char *why, size_t n)
{
  /* inih takes ';' for a comment only after a blank: "key = ; x" has
   * the value "; x". */
  if (!*v || *v == ';') {
    snprintf(why, n, "missing value");
    return false;
  }
  switch (t) {
  case V_NAME:
    if (!valid_name(v)) {
      snprintf(why, n, "bad name '%s' (" NAME_RULE ")", v);
      return false;
    }
    return true;
  case V_PROTOCOL:
    if (strcmp(v, "C") == 0 || strcmp(v, "c") == 0)
      return true;
    if (strcasecmp(v, "A") == 0 || strcasecmp(v, "B") == 0)
      snprintf(why, n, "protocol %s is not supported (only C)", v);
    else
      snprintf(why, n, "expected C");
    return false;
  case V_META:
    if (strcmp(v, "internal") == 0)
      return true;
    return check_path(v, why, n);
  case V_PATH:
    return check_path(v, why, n);
  case V_DURATION:
    return check_duration(v, num, why, n);
  case V_SIZE:
    return check_size(v, num, why, n);
  case V_ADDRESS:
    return parse_address(v, NULL, NULL, why, n);
  case V_ONOFF:
    if (strcmp(v, "on") == 0 || strcmp(v, "off") == 0) {
      *num = strcmp(v, "on") == 0;
      return true;
    }
    snprintf(why, n, "expected on or off");
    return false;
  case V_SUITES:
    return hb_tls_check_suites(v, false, why, n) == 0;
  }
  snprintf(why, n, "internal error: unknown value type");
  return false;
}

/* ---- reading --------------------------------------------------------- */

/* A line starting with '[': enter the section it names. */
static int section_header(struct parser *p, const char *s, size_t len)
{
  const char *end = memchr(s, ']', len);
  char inner[256];
  size_t n;

  if (!end)
    return fail(p, p->line, EINVAL, "missing ']' in section header");
  for (const char *r = end + 1; r < s + len; r++) {
    if (*r == ';' || *r == '#')
      break;
    if (!is_blank(*r))
      return fail(p, p->line, EINVAL, "text after ']' in section header");
  }
  s++;
  while (s < end && is_blank(*s))
    s++;
  while (end > s && is_blank(end[-1]))
    end--;
  n = (size_t) (end - s) < sizeof inner ? (size_t) (end - s) : sizeof inner - 1;
  memcpy(inner, s, n);
  inner[n] = '\0';

  p->node = NULL;
  if (strcmp(inner, "resource") == 0 || strcmp(inner, "tls") == 0) {
    bool res = inner[0] == 'r';
    unsigned *first = res ? &p->resource_line : &p->tls_line;
    if (*first)
      return fail(p, p->line, EINVAL, "[%s]: duplicate section (first at line %u)",
                  inner, *first);
    *first = p->line;
    p->sec = res ? SEC_RESOURCE : SEC_TLS;
    snprintf(p->secname, sizeof p->secname, "[%s]", res ? "resource" : "tls");
    return 0;
  }
  if (strncmp(inner, "node", 4) == 0 && (!inner[4] || is_blank(inner[4]))) {
    const char *name = inner + 4;
    while (is_blank(*name))
      name++;
    if (!*name)
      return fail(p, p->line, EINVAL, "[node]: missing node name (write [node NAME])");
    if (!valid_name(name))
      return fail(p, p->line, EINVAL, "[node %s]: bad node name (" NAME_RULE ")",
                  name);
    for (unsigned i = 0; i < p->nnodes; i++)
      if (strcasecmp(p->nodes[i].name, name) == 0)
        return fail(p, p->line, EINVAL, "[node %s]: duplicate node (first at line %u)",
                    name, p->nodes[i].line);
    if (p->nnodes == HB_CONFIG_NODES)
      return fail(p, p->line, EINVAL,
                  "[node %s]: more than two nodes (already have %s and %s)",
                  name, p->nodes[0].name, p->nodes[1].name);
    struct raw_node *node = &p->nodes[p->nnodes];
    node->name = strdup(name);
    if (!node->name)
      return fail(p, p->line, ENOMEM, "out of memory");
    node->line = p->line;
    p->nnodes++;
    p->node = node;
    p->sec = SEC_NODE;
    snprintf(p->secname, sizeof p->secname, "[node %.63s]", name);
    return 0;
  }
  return fail(p, p->line, EINVAL,
              "[%s]: unknown section (expected [resource], [tls] or [node NAME])",
              inner);
}

/* inih's fgets-like reader: one physical line per call, without its
 * indentation (see the top of the file). */
static char *read_line(char *buf, int num, void *stream)
{
  struct parser *p = stream;
  const char *s, *nl;
  size_t len;

  if (p->err || !p->text[p->pos] || num < 3)
    return NULL;
  s = p->text + p->pos;
  nl = strchr(s, '\n');
  len = nl ? (size_t) (nl - s) : strlen(s);
  p->pos += len + (nl != NULL);
  p->line++;
  if (p->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
    s += 3;
    len -= 3;
  }
  while (len && isspace((unsigned char) *s)) {
    s++;
    len--;
  }
  /* inih drops a byte-order mark at the start of the line it is handed
   * on line 1 too: a second one, or one after blanks, would hide the
   * line from our checks (found by fuzzing). */
  if (p->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
    fail(p, p->line, EINVAL, "a byte-order mark that is not the file's first bytes");
    return NULL;
  }
  bool comment = len && (*s == ';' || *s == '#');
  if (len > (size_t) num - 2) {
    if (!comment) {
      fail(p, p->line, EINVAL, "line too long (more than %d characters)", num - 2);
      return NULL;
    }
    len = num - 2;
  }
  if (len && !comment) {
    if (*s == '[') {
      if (section_header(p, s, len) < 0)
        return NULL;
    } else {
      /* Like inih: the line ends at an inline comment, a ';' after a
       * blank, and the key at the first '=' or ':'. */
      size_t end = 0;
      while (end < len && !(s[end] == ';' && end && isspace((unsigned char) s[end - 1])))
        end++;
      bool sep = memchr(s, '=', end) || memchr(s, ':', end);
      while (end && is_blank(s[end - 1]))
        end--;
      if (end && !sep) {
        fail(p, p->line, EINVAL, "expected KEY = VALUE or [SECTION]");
        return NULL;
      }
    }
  }
  memcpy(buf, s, len);
  buf[len] = '\n';
  buf[len + 1] = '\0';
  return buf;
}

static const struct key *find_key(enum section sec, const char *name)
{
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (keys[i].sec == sec && strcmp(keys[i].name, name) == 0)
      return &keys[i];
  return NULL;
}

/* inih's handler; SECTION is ignored, the reader tracks sections. */
static int on_key(void *user, const char *section, const char *name,
                  const char *value)
{
  struct parser *p = user;
  const struct key *k;
  struct setting *set;
  char why[256];

  if (p->err)
    return 0;
  if (!*name) {
    fail(p, p->line, EINVAL, "missing key name before '='");
    return 0;
  }
  if (p->sec == SEC_NONE) {
    fail(p, p->line, EINVAL,
         "%s: key outside any section (put it under [resource], [tls] or [node NAME])",
         name);
    return 0;
  }
  k = find_key(p->sec, name);
  if (!k) {
    fail(p, p->line, EINVAL, "%s %s: unknown key", p->secname, name);
    return 0;
  }
  set = (struct setting *) ((p->sec == SEC_NODE ? (char *) p->node
                                                : (char *) &p->g) + k->off);
  if (set->line) {
    if (set->by == k)
      fail(p, p->line, EINVAL, "%s %s: duplicate key (first at line %u)",
           p->secname, name, set->line);
    else
      fail(p, p->line, EINVAL, "%s %s: already set by [%s] %s at line %u",
           p->secname, name, section_names[set->by->sec], set->by->name,
           set->line);
    return 0;
  }
  if (!check_value(k->type, value, &set->num, why, sizeof why)) {
    fail(p, p->line, EINVAL, "%s %s: %s", p->secname, name, why);
    return 0;
  }
  set->value = strdup(value);
  if (!set->value) {
    fail(p, p->line, ENOMEM, "out of memory");
    return 0;
  }
  set->line = p->line;
  set->by = k;
  return 1;
}

/* ---- the whole file -------------------------------------------------- */

/* The directory relative paths are taken from: FILE's, made absolute. */
static char *base_dir(const char *file)
{
  const char *slash = strrchr(file, '/');
  char *cwd = NULL, *dir = NULL;

  if (file[0] == '/')
    return strndup(file, slash == file ? 1 : (size_t) (slash - file));
  cwd = getcwd(NULL, 0);
  if (!cwd || !slash)
    return cwd;
  if (asprintf(&dir, "%s/%.*s", cwd, (int) (slash - file), file) < 0)
    dir = NULL;
  free(cwd);
  return dir;
}

/* RAW with %n replaced by NODE and %% by %, made absolute against DIR. */
static char *make_path(const char *dir, const char *raw, const char *node)
{
  size_t len = 0, dlen = strlen(dir), nlen = strlen(node);
  char *out, *o;
  bool rel;

  for (const char *s = raw; *s; s++) {
    if (*s == '%' && s[1] == 'n')
      len += nlen, s++;
    else
      len++, s += *s == '%' && s[1] == '%';
  }
  out = malloc(dlen + 1 + len + 1);
  if (!out)
    return NULL;
  o = out;
  rel = raw[0] != '/';
  if (rel) {
    memcpy(o, dir, dlen);
    o += dlen;
    if (dlen == 0 || dir[dlen - 1] != '/')
      *o++ = '/';
    while (raw[0] == '.' && raw[1] == '/')
      for (raw += 2; *raw == '/'; raw++)
        ;
  }
  for (const char *s = raw; *s; s++) {
    if (*s == '%' && s[1] == 'n') {
      memcpy(o, node, nlen);
      o += nlen;
      s++;
    } else {
      *o++ = *s;
      s += *s == '%' && s[1] == '%';
    }
  }
  *o = '\0';
  return out;
}

int hb_config_match_host(const char *const names[], unsigned n,
                         const char *hostname)
{
  size_t shortlen = strcspn(hostname, ".");

  for (unsigned i = 0; i < n; i++)
    if (strcasecmp(names[i], hostname) == 0)
      return (int) i;
  if (!hostname[shortlen] || shortlen == 0)
    return -1;
  for (unsigned i = 0; i < n; i++)
    if (strlen(names[i]) == shortlen &&
        strncasecmp(names[i], hostname, shortlen) == 0)
      return (int) i;
  return -1;
}

static int check_tls(struct parser *p)
{
  struct raw_global *g = &p->g;

  if (g->tls_mode.line && g->tls_mode.num == 0)
    return 0;
  if (g->cert.line && g->psk.line) {
    bool psk_last = g->psk.line > g->cert.line;
    return fail(p, psk_last ? g->psk.line : g->cert.line, EINVAL,
                "[tls] %s: cert and psk are mutually exclusive",
                psk_last ? "psk" : "cert");
  }
  if (!g->cert.line && !g->psk.line)
    return fail(p, p->tls_line, EINVAL,
                "[tls]: TLS is on but neither cert nor psk is set"
                " (mode = off turns it off)");
  if (g->cert.line) {
    if (!g->key.line)
      return fail(p, g->cert.line, EINVAL, "[tls] cert: key is required with cert");
    if (!g->ca.line)
      return fail(p, g->cert.line, EINVAL, "[tls] cert: ca is required with cert");
    return 0;
  }
  if (g->suites.line) {
    char why[256];

    if (hb_tls_check_suites(g->suites.value, true, why, sizeof why) < 0)
      return fail(p, g->suites.line, EINVAL, "[tls] ciphersuites: %s", why);
  }
  if (g->ca.line)
    return fail(p, g->ca.line, EINVAL, "[tls] ca: not used with psk");
  if (g->key.line)
    return fail(p, g->key.line, EINVAL, "[tls] key: not used with psk");
  return 0;
}

static int find_self(struct parser *p, const char *want)
{
  const char *names[HB_CONFIG_NODES];
  char host[HOST_NAME_MAX + 1];
  int i;

  for (unsigned j = 0; j < HB_CONFIG_NODES; j++)
    names[j] = p->nodes[j].name;
  if (want) {
    for (i = 0; i < HB_CONFIG_NODES; i++)
      if (strcmp(names[i], want) == 0)
        return i;
    return fail(p, 0, ENOENT, "node=%s: no [node %s] section (nodes: %s, %s)",
                want, want, names[0], names[1]);
  }
  if (gethostname(host, sizeof host) < 0)
    return fail(p, 0, errno, "gethostname: %s", strerror(errno));
  host[sizeof host - 1] = '\0';
  i = hb_config_match_host(names, HB_CONFIG_NODES, host);
  if (i < 0)
    return fail(p, 0, ENOENT,
                "host name '%s' matches no [node] section (nodes: %s, %s);"
                " set node=NAME", host, names[0], names[1]);
  return i;
}

/* Allocate *DST = S (NULL stays NULL); false when out of memory. */
static bool copy_str(char **dst, const char *s)
{
  *dst = s ? strdup(s) : NULL;
  return !s || *dst;
}

static uint32_t ms_or(const struct setting *s, uint32_t dflt)
{
  return s->line ? (uint32_t) s->num : dflt;
}

/* Everything that needs the whole file; fills OUT. */
static int finish(struct parser *p, const char *want, struct hb_config *out)
{
  struct raw_global *g = &p->g;
  char why[256], *dir = NULL, *ctl = NULL;
  int self;

  if (!p->resource_line)
    return fail(p, 0, EINVAL, "missing section [resource]");
  if (!g->name.line)
    return fail(p, p->resource_line, EINVAL, "[resource]: missing required key 'name'");
  if (p->nnodes < HB_CONFIG_NODES)
    return fail(p, 0, EINVAL, "need exactly two [node NAME] sections, found %u",
                p->nnodes);
  for (unsigned i = 0; i < HB_CONFIG_NODES; i++) {
    struct raw_node *n = &p->nodes[i];
    if (!n->disk.line)
      return fail(p, n->line, EINVAL, "[node %s]: missing required key 'disk'", n->name);
    if (!n->address.line)
      return fail(p, n->line, EINVAL, "[node %s]: missing required key 'address'",
                  n->name);
  }
  if (check_tls(p) < 0)
    return p->err;

  out->protocol = 'C';
  out->size = g->size.line ? g->size.num : 0;
  out->ping_interval_ms = ms_or(&g->ping_interval, HB_CONFIG_PING_INTERVAL_MS);
  out->ping_timeout_ms = ms_or(&g->ping_timeout, HB_CONFIG_PING_TIMEOUT_MS);
  out->connect_timeout_ms = ms_or(&g->connect_timeout, HB_CONFIG_CONNECT_TIMEOUT_MS);
  out->request_timeout_ms = ms_or(&g->request_timeout, HB_CONFIG_REQUEST_TIMEOUT_MS);
  /* A PING goes out after ping-interval of silence and the link is dead
   * after ping-timeout of silence: the timeout must leave the PONG time to
   * come back, or an idle link drops every time. */
  if (out->ping_timeout_ms <= out->ping_interval_ms)
    return fail(p, g->ping_timeout.line ? g->ping_timeout.line : g->ping_interval.line, EINVAL,
                "[resource] ping-timeout (%ums) must be longer than ping-interval (%ums)",
                out->ping_timeout_ms, out->ping_interval_ms);
  {
    static const struct { const char *key; size_t off; uint32_t min; } mins[] = {
      { "ping-interval", offsetof(struct hb_config, ping_interval_ms), 10 },
      { "ping-timeout", offsetof(struct hb_config, ping_timeout_ms), 20 },
      { "connect-timeout", offsetof(struct hb_config, connect_timeout_ms), 100 },
      { "request-timeout", offsetof(struct hb_config, request_timeout_ms), 100 },
    };
    const struct setting *set[] = { &g->ping_interval, &g->ping_timeout, &g->connect_timeout,
                                    &g->request_timeout };
    for (size_t i = 0; i < sizeof mins / sizeof mins[0]; i++) {
      uint32_t v = *(const uint32_t *) ((const char *) out + mins[i].off);
      if (v < mins[i].min)
        return fail(p, set[i]->line, EINVAL, "[resource] %s: %ums is too short (at least %ums)",
                    mins[i].key, v, mins[i].min);
    }
  }
  if (!copy_str(&out->file, p->file) || !copy_str(&out->name, g->name.value))
    goto nomem;

  dir = base_dir(p->file);
  if (!dir)
    return fail(p, 0, errno ? errno : ENOMEM, "getcwd: %s", strerror(errno));
  if (g->control.line)
    ctl = strdup(g->control.value);
  else if (asprintf(&ctl, HB_CONFIG_CONTROL_DIR "/%s.ctl", g->name.value) < 0)
    ctl = NULL;
  if (!ctl)
    goto nomem;

  for (unsigned i = 0; i < HB_CONFIG_NODES; i++) {
    struct raw_node *r = &p->nodes[i];
    struct hb_config_node *n = &out->nodes[i];
    n->line = r->line;
    if (!copy_str(&n->name, r->name) || !copy_str(&n->address, r->address.value))
      goto nomem;
    if (!parse_address(r->address.value, &n->host, &n->port, why, sizeof why))
      goto nomem;       /* it parsed once already: only memory can fail */
    n->disk = make_path(dir, r->disk.value, r->name);
    n->control = make_path(dir, r->control.line ? r->control.value : ctl, r->name);
    if (!n->disk || !n->control)
      goto nomem;
    if (r->meta.line) {
      n->meta = strcmp(r->meta.value, "internal") == 0
        ? strdup(r->meta.value) : make_path(dir, r->meta.value, r->name);
      if (!n->meta)
        goto nomem;
    }
  }
  if (strcasecmp(out->nodes[0].host, out->nodes[1].host) == 0 &&
      out->nodes[0].port == out->nodes[1].port) {
    fail(p, p->nodes[1].address.line, EINVAL, "[node %s] address: same as [node %s]",
         p->nodes[1].name, p->nodes[0].name);
    goto out;
  }

  self = find_self(p, want);
  if (self < 0)
    goto out;
  out->self = (unsigned) self;
  out->peer = 1 - out->self;

  const char *me = p->nodes[self].name;
  if (g->tls_mode.line && g->tls_mode.num == 0) {
    out->tls = HB_TLS_OFF;
    out->tls_off_line = g->tls_mode.line;
  } else if (g->psk.line) {
    out->tls = HB_TLS_PSK;
    if (!(out->tls_psk = make_path(dir, g->psk.value, me)))
      goto nomem;
  } else {
    out->tls = HB_TLS_CERT;
    out->tls_ca = make_path(dir, g->ca.value, me);
    out->tls_cert = make_path(dir, g->cert.value, me);
    out->tls_key = make_path(dir, g->key.value, me);
    if (!out->tls_ca || !out->tls_cert || !out->tls_key)
      goto nomem;
  }
  if (out->tls != HB_TLS_OFF && g->suites.line &&
      !(out->tls_ciphersuites = strdup(g->suites.value)))
    goto nomem;
  goto out;

nomem:
  fail(p, 0, ENOMEM, "out of memory");
out:
  free(dir);
  free(ctl);
  return p->err;
}

static void free_setting(struct setting *s)
{
  free(s->value);
}

static void free_parser(struct parser *p)
{
  struct setting *gs[] = {
    &p->g.name, &p->g.protocol, &p->g.control, &p->g.size,
    &p->g.ping_interval, &p->g.ping_timeout, &p->g.connect_timeout, &p->g.request_timeout,
    &p->g.tls_mode, &p->g.ca, &p->g.cert, &p->g.key, &p->g.psk,
    &p->g.suites,
  };

  for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++)
    free_setting(gs[i]);
  for (unsigned i = 0; i < p->nnodes; i++) {
    free(p->nodes[i].name);
    free_setting(&p->nodes[i].disk);
    free_setting(&p->nodes[i].meta);
    free_setting(&p->nodes[i].address);
    free_setting(&p->nodes[i].control);
  }
}

int hb_config_parse_string(const char *text, const char *file,
                           const char *node, struct hb_config *out,
                           char *err, size_t errlen)
{
  struct parser p = {
    .file = file, .text = text, .errbuf = err, .errlen = errlen,
  };
  int r;

  memset(out, 0, sizeof *out);
  if (err && errlen)
    err[0] = '\0';
  r = ini_parse_stream(read_line, &p, on_key, &p);
  if (r == -2)
    fail(&p, 0, ENOMEM, "out of memory");
  else if (r > 0 && (!p.err || (unsigned) r < p.errline)) {
    /* inih saw a problem before any of ours: none of the reader's checks
     * caught it, so all we know is the line. */
    p.err = 0;
    fail(&p, (unsigned) r, EINVAL, "syntax error");
  }
  if (!p.err)
    finish(&p, node, out);
  free_parser(&p);
  if (p.err)
    hb_config_free(out);
  return p.err;
}

int hb_config_load(const char *path, const char *node, struct hb_config *out,
                   char *err, size_t errlen)
{
  struct parser p = { .file = path, .errbuf = err, .errlen = errlen };
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int fd, r;

  memset(out, 0, sizeof *out);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(&p, 0, errno, "%s", strerror(errno));
  for (;;) {
    if (len == cap) {
      char *nb;
      if (cap > HB_CONFIG_FILE_MAX) {
        fail(&p, 0, EFBIG, "file too large (more than %u bytes)", HB_CONFIG_FILE_MAX);
        goto out;
      }
      cap = cap ? cap * 2 : 4096;
      nb = realloc(buf, cap + 1);
      if (!nb) {
        fail(&p, 0, ENOMEM, "out of memory");
        goto out;
      }
      buf = nb;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      fail(&p, 0, errno, "%s", strerror(errno));
      goto out;
    }
    if (n == 0)
      break;
    len += n;
  }
  if (len > HB_CONFIG_FILE_MAX) {
    fail(&p, 0, EFBIG, "file too large (more than %u bytes)", HB_CONFIG_FILE_MAX);
    goto out;
  }
  buf[len] = '\0';
  if (strlen(buf) != len) {
    unsigned line = 1;
    for (const char *s = buf; (s = strchr(s, '\n')); s++)
      line++;
    fail(&p, line, EINVAL, "NUL byte (not a text file?)");
    goto out;
  }
  r = hb_config_parse_string(buf, path, node, out, err, errlen);
  free(buf);
  close(fd);
  return r;

out:
  free(buf);
  close(fd);
  return p.err;
}

void hb_config_free(struct hb_config *c)
{
  free(c->file);
  free(c->name);
  free(c->tls_ca);
  free(c->tls_cert);
  free(c->tls_key);
  free(c->tls_psk);
  free(c->tls_ciphersuites);
  for (unsigned i = 0; i < HB_CONFIG_NODES; i++) {
    struct hb_config_node *n = &c->nodes[i];
    free(n->name);
    free(n->disk);
    free(n->meta);
    free(n->address);
    free(n->host);
    free(n->control);
  }
  memset(c, 0, sizeof *c);
}

const char *hb_tls_mode_name(enum hb_tls_mode mode)
{
  switch (mode) {
  case HB_TLS_CERT: return "cert";
  case HB_TLS_PSK: return "psk";
  case HB_TLS_OFF: return "off";
  }
  return "?";
}
