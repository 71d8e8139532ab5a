/* The JSON reader and writer of the control socket (replicator/json.c):
 * good documents and their flattened fields, every refusal with its
 * message, the writer's escaping and errors, and round trips. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

#define S(lit) lit, sizeof lit - 1

/* ---- reader: good documents ------------------------------------------- */

static void test_parse_flat(void **state)
{
  static const char text[] =
    " {\"cmd\" : \"promote\",\t\"force\":true,\"n\":-42,\"z\":0,\"x\":null,"
    "\"f\":false,\"big\":9223372036854775807,\"small\":-9223372036854775808,"
    "\"d\":1.5e3}\r\n";
  struct hb_json_doc d;
  char err[128] = "";
  const struct hb_json_field *f;
  bool found;
  int64_t v;

  assert_int_equal(hb_json_parse(S(text), &d, err, sizeof err), 0);
  assert_int_equal(d.nfields, 9);
  assert_string_equal(hb_json_get_str(&d, "cmd"), "promote");
  assert_true(hb_json_get_bool(&d, "force", &found));
  assert_true(found);
  assert_false(hb_json_get_bool(&d, "f", &found));
  assert_true(found);
  assert_false(hb_json_get_bool(&d, "cmd", &found));   /* a string */
  assert_false(found);
  assert_true(hb_json_get_int(&d, "n", &v));
  assert_int_equal(v, -42);
  assert_true(hb_json_get_int(&d, "z", &v));
  assert_int_equal(v, 0);
  assert_true(hb_json_get_int(&d, "big", &v));
  assert_true(v == INT64_MAX);
  assert_true(hb_json_get_int(&d, "small", &v));
  assert_true(v == INT64_MIN);
  assert_false(hb_json_get_int(&d, "d", &v));
  f = hb_json_get(&d, "d");
  assert_non_null(f);
  assert_int_equal(f->type, HB_JSON_NUMBER);
  assert_true(f->d == 1500.0);
  f = hb_json_get(&d, "x");
  assert_non_null(f);
  assert_int_equal(f->type, HB_JSON_NULL);
  assert_null(hb_json_get(&d, "missing"));
  assert_null(hb_json_get_str(&d, "missing"));
  /* document order, depth 0 */
  assert_string_equal(d.fields[0].path, "cmd");
  assert_string_equal(d.fields[8].path, "d");
  for (size_t k = 0; k < d.nfields; k++)
    assert_int_equal(d.fields[k].depth, 0);
  hb_json_free(&d);
  assert_null(d.fields);
  hb_json_free(&d);   /* twice is fine */
}

static void test_parse_nested(void **state)
{
  static const char text[] =
    "{\"ok\":true,\"tls\":{\"enabled\":true,\"version\":\"TLSv1.3\","
    "\"peer\":{\"cn\":\"beta\"}},\"peers\":[\"a\",{\"id\":2},[]],\"e\":{}}";
  struct hb_json_doc d;
  char err[128] = "";
  const struct hb_json_field *f;
  int64_t v;

  assert_int_equal(hb_json_parse(S(text), &d, err, sizeof err), 0);
  f = hb_json_get(&d, "tls");
  assert_non_null(f);
  assert_int_equal(f->type, HB_JSON_OBJECT);
  assert_int_equal(f->n, 3);
  assert_int_equal(f->depth, 0);
  assert_string_equal(hb_json_get_str(&d, "tls.version"), "TLSv1.3");
  f = hb_json_get(&d, "tls.version");
  assert_int_equal(f->depth, 1);
  assert_string_equal(f->key, "version");
  assert_string_equal(hb_json_get_str(&d, "tls.peer.cn"), "beta");
  assert_int_equal(hb_json_get(&d, "tls.peer.cn")->depth, 2);
  f = hb_json_get(&d, "peers");
  assert_int_equal(f->type, HB_JSON_ARRAY);
  assert_int_equal(f->n, 3);
  assert_string_equal(hb_json_get_str(&d, "peers.0"), "a");
  assert_true(hb_json_get_int(&d, "peers.1.id", &v));
  assert_int_equal(v, 2);
  assert_int_equal(hb_json_get(&d, "peers.2")->type, HB_JSON_ARRAY);
  assert_int_equal(hb_json_get(&d, "peers.2")->n, 0);
  assert_int_equal(hb_json_get(&d, "e")->type, HB_JSON_OBJECT);
  assert_int_equal(hb_json_get(&d, "e")->n, 0);
  hb_json_free(&d);
}

static void test_parse_strings(void **state)
{
  static const char text[] =
    "{\"esc\":\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t\","
    "\"u\":\"\\u00e9\\u20ac\\ud83d\\ude00\\u0041\","
    "\"raw\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
    "\"\\u006bey\":1,\"empty\":\"\"}";
  struct hb_json_doc d;
  char err[128] = "";
  const struct hb_json_field *f;

  assert_int_equal(hb_json_parse(S(text), &d, err, sizeof err), 0);
  assert_string_equal(hb_json_get_str(&d, "esc"), "q\" b\\ s/ \b\f\n\r\t");
  assert_string_equal(hb_json_get_str(&d, "u"),
                      "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "A");
  assert_string_equal(hb_json_get_str(&d, "raw"),
                      "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  assert_non_null(hb_json_get(&d, "key"));      /* an escaped key */
  f = hb_json_get(&d, "empty");
  assert_int_equal(f->type, HB_JSON_STRING);
  assert_int_equal(f->n, 0);
  assert_int_equal(hb_json_get(&d, "esc")->n, strlen("q\" b\\ s/ \b\f\n\r\t"));
  hb_json_free(&d);
}

/* ---- reader: refusals --------------------------------------------------- */

static const struct bad {
  const char *text;
  size_t len;           /* 0: strlen(text) */
  const char *msg;      /* the whole message */
} bad[] = {
  { "", 0, "at byte 0: expected '{' (a JSON object), got end of input" },
  { "   ", 0, "at byte 3: expected '{' (a JSON object), got end of input" },
  { "hello", 0, "at byte 0: expected '{' (a JSON object), got 'h'" },
  { "[1,2]", 0, "at byte 0: expected '{' (a JSON object), got '['" },
  { "\"str\"", 0, "at byte 0: expected '{' (a JSON object), got '\"'" },
  { "{", 0, "at byte 1: expected a string key, got end of input" },
  { "{\"a\"}", 0, "at byte 4: expected ':', got '}'" },
  { "{\"a\":}", 0, "at byte 5: expected a value, got '}'" },
  { "{\"a\":1,}", 0, "at byte 7: expected a string key, got '}'" },
  { "{\"a\":1 \"b\":2}", 0, "at byte 7: expected ',' or '}', got '\"'" },
  { "{a:1}", 0, "at byte 1: expected a string key, got 'a'" },
  { "{'a':1}", 0, "at byte 1: expected a string key, got byte 0x27" },
  { "{\"a\":1}x", 0, "at byte 7: 'x' after the object" },
  { "{\"a\":1}{}", 0, "at byte 7: '{' after the object" },
  { "{\"a\":[1,2}", 0, "at byte 9: expected ',' or ']', got '}'" },
  { "{\"a\":tru}", 0, "at byte 5: expected a value, got 't'" },
  { "{\"a\":nul}", 0, "at byte 5: expected a value, got 'n'" },
  { "{\"a\":True}", 0, "at byte 5: expected a value, got 'T'" },
  { "{\"a\":\"abc}", 0, "at byte 5: unterminated string" },
  { "{\"a\":\"abc\\", 0, "at byte 5: unterminated string" },
  { "{\"a\":\"\\x\"}", 0, "at byte 6: invalid escape \\ followed by 'x'" },
  { "{\"a\":\"\\u12\"}", 0, "at byte 6: \\u must be followed by four hex digits" },
  { "{\"a\":\"\\u00zz\"}", 0, "at byte 6: \\u must be followed by four hex digits" },
  { "{\"a\":\"\\u0000\"}", 0, "at byte 6: \\u0000 (NUL) is not allowed in a string" },
  { "{\"a\":\"\\ud800\"}", 0, "at byte 6: high surrogate \\ud800 not followed by a low one" },
  { "{\"a\":\"\\ud800\\u0041\"}", 0, "at byte 6: high surrogate \\ud800 not followed by a low one" },
  { "{\"a\":\"\\udc00\"}", 0, "at byte 6: lone low surrogate \\udc00" },
  { "{\"a\":\"x\ny\"}", 0, "at byte 7: raw control character 0x0a in a string" },
  { "{\"a\":\"x\0y\"}", 11, "at byte 7: NUL byte in a string" },
  { "{\"a\":1}\0", 8, "at byte 7: byte 0x00 after the object" },
  { "\0{}", 3, "at byte 0: expected '{' (a JSON object), got byte 0x00" },
  { "{\"a\":\"\xff\"}", 0, "at byte 6: invalid UTF-8 in a string" },
  { "{\"a\":\"\xc0\xaf\"}", 0, "at byte 6: invalid UTF-8 in a string" },     /* overlong '/' */
  { "{\"a\":\"\xed\xa0\x80\"}", 0, "at byte 6: invalid UTF-8 in a string" }, /* surrogate */
  { "{\"a\":\"\xf4\x90\x80\x80\"}", 0, "at byte 6: invalid UTF-8 in a string" }, /* > U+10FFFF */
  { "{\"a\":\"\xe2\x82\"}", 0, "at byte 6: invalid UTF-8 in a string" },     /* truncated */
  { "{\"\xff\":1}", 0, "at byte 2: invalid UTF-8 in a string" },
  { "{\"a\":01}", 0, "at byte 5: a number may not start with 0" },
  { "{\"a\":-}", 0, "at byte 5: a number needs a digit after '-'" },
  { "{\"a\":+1}", 0, "at byte 5: expected a value, got '+'" },
  { "{\"a\":1.}", 0, "at byte 5: a number needs a digit after '.'" },
  { "{\"a\":.5}", 0, "at byte 5: expected a value, got '.'" },
  { "{\"a\":1e}", 0, "at byte 5: a number needs a digit in its exponent" },
  { "{\"a\":9223372036854775808}", 0, "at byte 5: integer out of range" },
  { "{\"a\":-9223372036854775809}", 0, "at byte 5: integer out of range" },
  { "{\"a\":99999999999999999999999}", 0, "at byte 5: integer out of range" },
  { "{\"a\":1,\"a\":2}", 0, "at byte 7: duplicate key \"a\"" },
  { "{\"o\":{\"a\":1,\"a\":2}}", 0, "at byte 12: duplicate key \"a\"" },
  { "{\"\":1}", 0, "at byte 1: empty key" },
  { "{\"a.b\":1}", 0, "at byte 1: a key may not contain '.'" },
  { "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":1}}}}}}}}}", 0,
    "at byte 40: nested deeper than 8 levels" },
  { "{\"a\":[[[[[[[[1]]]]]]]]}", 0, "at byte 12: nested deeper than 8 levels" },
};

static void test_parse_bad(void **state)
{
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    const struct bad *b = &bad[k];
    struct hb_json_doc d = { (void *) 1, 99 };
    char err[256] = "";
    int r = hb_json_parse(b->text, b->len ? b->len : strlen(b->text), &d,
                          err, sizeof err);

    if (r != -EINVAL || strcmp(err, b->msg) != 0)
      fail_msg("case %zu: %s: got %d \"%s\", expected \"%s\"", k, b->text, r,
               err, b->msg);
    assert_null(d.fields);
    assert_int_equal(d.nfields, 0);
  }
}

/* Not NUL-terminated: the parser must stop at LEN. */
static void test_parse_length_bound(void **state)
{
  char *buf = malloc(9);
  struct hb_json_doc d;
  char err[128];

  memcpy(buf, "{\"a\":\"bc", 8);   /* no closing quote within the 8 bytes */
  buf[8] = '"';
  assert_int_equal(hb_json_parse(buf, 8, &d, err, sizeof err), -EINVAL);
  assert_string_equal(err, "at byte 5: unterminated string");
  memcpy(buf, "{\"a\":123", 8);
  assert_int_equal(hb_json_parse(buf, 8, &d, err, sizeof err), -EINVAL);
  assert_string_equal(err, "at byte 8: expected ',' or '}', got end of input");
  free(buf);
}

static void test_parse_limits(void **state)
{
  static char buf[16 * (HB_JSON_FIELDS_MAX + 2) + HB_JSON_PATH_MAX * 2];
  char err[256];
  struct hb_json_doc d;
  size_t n = 0;

  /* exactly HB_JSON_FIELDS_MAX members: accepted; one more: refused */
  strcpy(buf, "{");
  for (int k = 0; k < HB_JSON_FIELDS_MAX; k++) {
    n = strlen(buf);
    snprintf(buf + n, sizeof buf - n, "%s\"k%d\":%d", k ? "," : "", k, k);
  }
  n = strlen(buf);
  assert_int_equal(hb_json_parse(buf, n, &d, err, sizeof err), -EINVAL);
  strcat(buf, "}");
  assert_int_equal(hb_json_parse(buf, n + 1, &d, err, sizeof err), 0);
  assert_int_equal(d.nfields, HB_JSON_FIELDS_MAX);
  hb_json_free(&d);
  buf[n] = '\0';
  strcat(buf, ",\"one\":1}");
  assert_int_equal(hb_json_parse(buf, strlen(buf), &d, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "more than 1024 members"));

  /* a path of HB_JSON_PATH_MAX bytes is fine, one more is not */
  n = (size_t) sprintf(buf, "{\"%0*d\":1}", HB_JSON_PATH_MAX, 0);
  assert_int_equal(hb_json_parse(buf, n, &d, err, sizeof err), 0);
  hb_json_free(&d);
  n = (size_t) sprintf(buf, "{\"a\":{\"%0*d\":1}}", HB_JSON_PATH_MAX - 1, 0);
  assert_int_equal(hb_json_parse(buf, n, &d, err, sizeof err), -EINVAL);
  assert_string_equal(err, "at byte 6: path of a member longer than 256 bytes");
}

/* Random bytes never crash the parser and never succeed with garbage
 * fields: whatever it accepts is a valid document. */
static void test_parse_garbage(void **state)
{
  static const char alphabet[] = "{}[]\":,\\ u0123456789.-+eEtrufalsn\x01\xff\xc3\xa9";
  unsigned seed = 12345;
  char buf[64], err[256];
  struct hb_json_doc d;
  int accepted = 0;

  for (int iter = 0; iter < 200000; iter++) {
    size_t len = (size_t) (rand_r(&seed) % (int) sizeof buf);
    for (size_t k = 0; k < len; k++)
      buf[k] = (iter & 1) ? (char) rand_r(&seed)
                          : alphabet[rand_r(&seed) % (int) (sizeof alphabet - 1)];
    if (len)
      buf[0] = '{';
    err[0] = '\0';
    int r = hb_json_parse(buf, len, &d, err, sizeof err);
    if (r == 0) {
      accepted++;
      hb_json_free(&d);
    } else {
      assert_int_equal(r, -EINVAL);
      assert_true(strncmp(err, "at byte ", 8) == 0);
    }
  }
  print_message("# %d of 200000 random inputs were valid JSON\n", accepted);
}

/* ---- writer ------------------------------------------------------------ */

static void test_write_basic(void **state)
{
  char buf[256];
  struct hb_json_out o;

  hb_json_out_init(&o, buf, sizeof buf);
  assert_int_equal(hb_json_out_end(&o), 2);
  assert_string_equal(buf, "{}");

  hb_json_out_init(&o, buf, sizeof buf);
  hb_json_add_bool(&o, "ok", true);
  hb_json_add_str(&o, "role", "Primary");
  hb_json_add_int(&o, "min", INT64_MIN);
  hb_json_add_int(&o, "zero", 0);
  hb_json_add_str(&o, "none", NULL);
  hb_json_add_null(&o, "n");
  hb_json_begin_obj(&o, "tls");
  hb_json_add_bool(&o, "enabled", false);
  hb_json_begin_obj(&o, "e");
  hb_json_end_obj(&o);
  hb_json_end_obj(&o);
  hb_json_add_str(&o, "last", "");
  int n = hb_json_out_end(&o);
  assert_int_equal(n, (int) strlen(buf));
  assert_string_equal(buf, "{\"ok\":true,\"role\":\"Primary\","
                      "\"min\":-9223372036854775808,\"zero\":0,\"none\":null,"
                      "\"n\":null,\"tls\":{\"enabled\":false,\"e\":{}},"
                      "\"last\":\"\"}");
}

static void test_write_escaping(void **state)
{
  static const struct {
    const char *in, *out;
  } cases[] = {
    { "plain", "\"plain\"" },
    { "q\"b\\", "\"q\\\"b\\\\\"" },
    { "\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"" },
    { "\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\"" },
    { "/", "\"/\"" },
    { "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"" },
    { "a\xff" "b", "\"a\\ufffdb\"" },                 /* invalid byte */
    { "\xc3", "\"\\ufffd\"" },                        /* truncated */
    { "\xe2\x82", "\"\\ufffd\\ufffd\"" },
    { "\xc0\xaf", "\"\\ufffd\\ufffd\"" },             /* overlong */
    { "\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"" },  /* surrogate */
  };
  char buf[256], expect[300];
  struct hb_json_out o;

  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    hb_json_out_init(&o, buf, sizeof buf);
    hb_json_add_str(&o, "k", cases[k].in);
    assert_true(hb_json_out_end(&o) > 0);
    snprintf(expect, sizeof expect, "{\"k\":%s}", cases[k].out);
    assert_string_equal(buf, expect);
  }
  /* keys are escaped too */
  hb_json_out_init(&o, buf, sizeof buf);
  hb_json_add_int(&o, "a\"b", 1);
  assert_true(hb_json_out_end(&o) > 0);
  assert_string_equal(buf, "{\"a\\\"b\":1}");
}

static void test_write_errors(void **state)
{
  char buf[64];
  struct hb_json_out o;

  /* no room: sticky, and the buffer is left empty */
  hb_json_out_init(&o, buf, 16);
  hb_json_add_str(&o, "key", "a value too long");
  hb_json_add_int(&o, "i", 1);
  assert_int_equal(hb_json_out_end(&o), -ENOSPC);
  assert_string_equal(buf, "");
  /* exactly fitting: {"a":1} is 7 bytes, 8 with the NUL */
  hb_json_out_init(&o, buf, 8);
  hb_json_add_int(&o, "a", 1);
  assert_int_equal(hb_json_out_end(&o), 7);
  hb_json_out_init(&o, buf, 7);
  hb_json_add_int(&o, "a", 1);
  assert_int_equal(hb_json_out_end(&o), -ENOSPC);
  hb_json_out_init(&o, buf, 2);
  assert_int_equal(hb_json_out_end(&o), -ENOSPC);
  /* misuse */
  hb_json_out_init(&o, buf, sizeof buf);
  hb_json_begin_obj(&o, "open");
  assert_int_equal(hb_json_out_end(&o), -EINVAL);
  hb_json_out_init(&o, buf, sizeof buf);
  hb_json_end_obj(&o);
  assert_int_equal(hb_json_out_end(&o), -EINVAL);
  hb_json_out_init(&o, buf, sizeof buf);
  hb_json_add_int(&o, NULL, 1);
  assert_int_equal(hb_json_out_end(&o), -EINVAL);
  hb_json_out_init(&o, buf, sizeof buf);
  for (int k = 0; k < HB_JSON_DEPTH_MAX; k++)
    hb_json_begin_obj(&o, "d");
  assert_int_equal(hb_json_out_end(&o), -EINVAL);
  /* adding after the end is an error, not a second object */
  hb_json_out_init(&o, buf, sizeof buf);
  assert_int_equal(hb_json_out_end(&o), 2);
  hb_json_add_int(&o, "late", 1);
  assert_int_equal(o.err, -EINVAL);
}

/* What the writer produces, the reader reads back, whatever the bytes. */
static void test_round_trip(void **state)
{
  unsigned seed = 777;
  char val[200], key[40] = "k", buf[2048], err[256];
  struct hb_json_out o;
  struct hb_json_doc d;

  for (int iter = 0; iter < 20000; iter++) {
    size_t vlen = (size_t) (rand_r(&seed) % 199), klen = 1 + (size_t) (rand_r(&seed) % 38);
    int64_t i = ((int64_t) rand_r(&seed) << 32) ^ rand_r(&seed) ^ -(int64_t) (iter & 1);
    for (size_t k = 0; k < vlen; k++)
      val[k] = (char) (1 + rand_r(&seed) % 255);
    val[vlen] = '\0';
    for (size_t k = 1; k < klen; k++)   /* "k...": never "o" */
      key[k] = (char) ('a' + rand_r(&seed) % 26);
    key[klen] = '\0';
    hb_json_out_init(&o, buf, sizeof buf);
    hb_json_add_str(&o, key, val);
    hb_json_begin_obj(&o, "o");
    hb_json_add_int(&o, "i", i);
    hb_json_end_obj(&o);
    int n = hb_json_out_end(&o);
    assert_true(n > 0);
    assert_null(memchr(buf, '\n', (size_t) n));
    if (hb_json_parse(buf, (size_t) n, &d, err, sizeof err) != 0)
      fail_msg("iteration %d: %s: %s", iter, err, buf);
    const char *back = hb_json_get_str(&d, key);
    assert_non_null(back);
    /* valid UTF-8 came back unchanged; then it is the same string */
    if (!strstr(buf, "\\ufffd"))
      assert_string_equal(back, val);
    int64_t j;
    assert_true(hb_json_get_int(&d, "o.i", &j));
    assert_true(i == j);
    hb_json_free(&d);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_flat),
    cmocka_unit_test(test_parse_nested),
    cmocka_unit_test(test_parse_strings),
    cmocka_unit_test(test_parse_bad),
    cmocka_unit_test(test_parse_length_bound),
    cmocka_unit_test(test_parse_limits),
    cmocka_unit_test(test_parse_garbage),
    cmocka_unit_test(test_write_basic),
    cmocka_unit_test(test_write_escaping),
    cmocka_unit_test(test_write_errors),
    cmocka_unit_test(test_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
