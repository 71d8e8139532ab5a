/* Fuzz target: one request line of the control socket (handle_line() in
 * replicator/ctl.c, included here for its static functions) against stub
 * operations. The first input byte chooses what the stubs answer (success,
 * a refusal, an error; an empty, control-character, echoed or overlong
 * message; no operations at all); every response must be one JSON object on
 * one line, with a non-zero code and an error message when not ok. */
#include "ctl.c"
#include "fuzz.h"

static unsigned char mode;
static const char *echo;   /* the request, NUL-terminated */

static void fill(char *msg, size_t len)
{
  switch (mode & 3) {
  case 0: break;                                  /* empty */
  case 1: snprintf(msg, len, "note\twith\x01" "controls\x7f"); break;
  case 2: snprintf(msg, len, "%s", echo); break;  /* request bytes, maybe long */
  case 3: memset(msg, 'x', len - 1); msg[len - 1] = '\0'; break;
  }
}
static int result(void)
{
  switch ((mode >> 2) & 3) {
  case 0: return 0;
  case 1: return HB_CTL_PEER_PRIMARY;
  case 2: return -EIO;
  default: return -(int) (mode >> 4) - 1;
  }
}
static int st(void *op, struct hb_json_out *o)
{
  (void) op;
  hb_json_add_str(o, "resource", "r0");
  hb_json_add_str(o, "echo", echo);
  hb_json_begin_obj(o, "tls");
  hb_json_add_bool(o, "enabled", true);
  hb_json_end_obj(o);
  if (((mode >> 2) & 3) == 3) return -EIO;
  return 0;
}
/* promote and demote */
static int pr(void *op, bool force, char *msg, size_t len)
{
  fill(msg, len);
  return result();
}

/* connect and disconnect */
static int cn(void *op, char *msg, size_t len)
{
  fill(msg, len);
  return result();
}

static const struct hb_ctl_ops ops_full = { st, pr, pr, cn, cn };
static const struct hb_ctl_ops ops_none = { 0 };
static struct hb_ctl ctl;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1 || size > HB_CTL_REQUEST_MAX + 1)
    return 0;
  mode = data[0];
  size--;
  data++;
  char *line = malloc(size + 1);
  memcpy(line, data, size);
  line[size] = '\0';
  char *e = malloc(size + 1);
  memcpy(e, data, size);
  e[size] = '\0';
  echo = e;
  ctl.ops = (mode & 0x80) && (mode & 0x40) ? &ops_none : &ops_full;
  size_t n = handle_line(&ctl, line, size);
  /* Every response is one valid JSON object without a newline. */
  struct hb_json_doc d;
  char err[256];
  if (n == 0 || n >= sizeof ctl.resp) abort();
  if (memchr(ctl.resp, '\n', n)) abort();
  if (hb_json_parse(ctl.resp, n, &d, err, sizeof err) != 0) {
    fprintf(stderr, "bad response: %s\n%.*s\n", err, (int) n, ctl.resp);
    abort();
  }
  bool found;
  bool ok = hb_json_get_bool(&d, "ok", &found);
  if (!found) abort();
  int64_t code;
  if (!ok && (!hb_json_get_int(&d, "code", &code) || code == 0 || !hb_json_get_str(&d, "error")))
    abort();
  hb_json_free(&d);
  free(line);
  free(e);
  return 0;
}
