/* The resource configuration file (replicator/config.c): valid files,
 * defaults, %n, relative paths, host name selection, and every error with
 * its exact message. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

/* Building blocks of the error cases; their lines are numbered so that
 * the expected messages can be checked by eye. */
#define RES    "[resource]\n"               /* 1 */ \
               "name = r0\n"                /* 2 */
#define TLSOFF "[tls]\n"                    /* 3 */ \
               "mode = off\n"               /* 4 */
#define NODE_A "[node a]\n"                 /* 5 */ \
               "disk = /dev/sda\n"          /* 6 */ \
               "address = 10.0.0.1:7789\n"  /* 7 */
#define NODE_B "[node b]\n"                 /* 8 */ \
               "disk = /dev/sdb\n"          /* 9 */ \
               "address = 10.0.0.2:7789\n"  /* 10 */
#define NODES  NODE_A NODE_B
/* The same with [node a]'s address left to the case, on line 7. */
#define NODE_A_ADDR(v) "[node a]\ndisk = /dev/sda\naddress = " v "\n"

static void check_empty(const struct hb_config *c)
{
  assert_null(c->file);
  assert_null(c->name);
  assert_null(c->nodes[0].name);
  assert_null(c->nodes[1].disk);
  assert_null(c->tls_cert);
}

/* ---- a full file ------------------------------------------------------ */

static const char full[] =
  "; a full configuration\n"
  "[resource]\n"
  "    name = r0\n"
  "    protocol = C\n"
  "    size = 10G\n"
  "    control = /run/test/%n.ctl\n"
  "    ping-interval = 250ms\n"
  "    ping-timeout = 3s\n"
  "    connect-timeout = 1min\n"
  "    request-timeout = 45s\n"
  "[tls]\n"
  "    ca = /etc/hablock/ca.pem\n"
  "    cert = /etc/hablock/%n.pem   ; this node's\n"
  "    key = /etc/hablock/%n.key\n"
  "\n"
  "[node alpha]\n"
  "    disk = /dev/vdb\n"
  "    meta = /var/lib/hablock/r0.meta\n"
  "    address = 192.168.1.1:7789\n"
  "[node bravo]\n"
  "    disk = /srv/r0.img\n"
  "    meta = internal\n"
  "    address = [fd00::2]:7790\n"
  "    control = /run/bravo.ctl\n";

static void test_full(void **state)
{
  struct hb_config c;
  char err[256];

  assert_int_equal(hb_config_parse_string(full, "/etc/hablock/r0.conf", "bravo",
                                          &c, err, sizeof err), 0);
  assert_string_equal(err, "");
  assert_string_equal(c.file, "/etc/hablock/r0.conf");
  assert_string_equal(c.name, "r0");
  assert_int_equal(c.protocol, 'C');
  assert_int_equal(c.size, 10ull << 30);
  assert_int_equal(c.ping_interval_ms, 250);
  assert_int_equal(c.ping_timeout_ms, 3000);
  assert_int_equal(c.connect_timeout_ms, 60000);
  assert_int_equal(c.request_timeout_ms, 45000);
  assert_int_equal(c.tls, HB_TLS_CERT);
  assert_int_equal(c.tls_off_line, 0);
  assert_string_equal(c.tls_ca, "/etc/hablock/ca.pem");
  assert_string_equal(c.tls_cert, "/etc/hablock/bravo.pem");
  assert_string_equal(c.tls_key, "/etc/hablock/bravo.key");
  assert_null(c.tls_psk);
  assert_int_equal(c.self, 1);
  assert_int_equal(c.peer, 0);
  assert_ptr_equal(hb_config_self(&c), &c.nodes[1]);
  assert_ptr_equal(hb_config_peer(&c), &c.nodes[0]);

  const struct hb_config_node *a = &c.nodes[0], *b = &c.nodes[1];
  assert_string_equal(a->name, "alpha");
  assert_int_equal(a->line, 16);
  assert_string_equal(a->disk, "/dev/vdb");
  assert_string_equal(a->meta, "/var/lib/hablock/r0.meta");
  assert_string_equal(a->address, "192.168.1.1:7789");
  assert_string_equal(a->host, "192.168.1.1");
  assert_int_equal(a->port, 7789);
  assert_string_equal(a->control, "/run/test/alpha.ctl");
  assert_string_equal(b->name, "bravo");
  assert_int_equal(b->line, 20);
  assert_string_equal(b->disk, "/srv/r0.img");
  assert_string_equal(b->meta, "internal");
  assert_string_equal(b->address, "[fd00::2]:7790");
  assert_string_equal(b->host, "fd00::2");
  assert_int_equal(b->port, 7790);
  assert_string_equal(b->control, "/run/bravo.ctl");
  hb_config_free(&c);
  check_empty(&c);
  hb_config_free(&c);           /* twice is harmless */
}

static void test_defaults(void **state)
{
  struct hb_config c;
  char err[256];

  assert_int_equal(hb_config_parse_string(RES TLSOFF NODES, "/etc/r0.conf", "a",
                                          &c, err, sizeof err), 0);
  assert_int_equal(c.protocol, 'C');
  assert_int_equal(c.size, 0);
  assert_int_equal(c.ping_interval_ms, HB_CONFIG_PING_INTERVAL_MS);
  assert_int_equal(c.ping_timeout_ms, HB_CONFIG_PING_TIMEOUT_MS);
  assert_int_equal(c.connect_timeout_ms, HB_CONFIG_CONNECT_TIMEOUT_MS);
  assert_int_equal(c.request_timeout_ms, HB_CONFIG_REQUEST_TIMEOUT_MS);
  assert_int_equal(c.tls, HB_TLS_OFF);
  assert_int_equal(c.tls_off_line, 4);
  assert_string_equal(hb_tls_mode_name(c.tls), "off");
  assert_null(c.tls_ca);
  assert_null(c.tls_cert);
  assert_null(c.tls_key);
  assert_null(c.tls_psk);
  for (int i = 0; i < 2; i++) {
    assert_null(c.nodes[i].meta);
    assert_string_equal(c.nodes[i].control, "/run/hablock/r0.ctl");
  }
  assert_int_equal(c.self, 0);
  assert_int_equal(c.peer, 1);
  hb_config_free(&c);
}

/* TLS off through [resource] tls, and TLS-PSK; cert/key/ca kept out of
 * the result when unused. */
static void test_tls_modes(void **state)
{
  struct hb_config c;
  char err[256];

  assert_int_equal(hb_config_parse_string("[resource]\nname = r0\ntls = off\n"
                                          "[tls]\ncert = c.pem\n" NODES,
                                          "/etc/r0.conf", "b", &c, err, sizeof err), 0);
  assert_int_equal(c.tls, HB_TLS_OFF);
  assert_int_equal(c.tls_off_line, 3);
  assert_null(c.tls_cert);
  hb_config_free(&c);

  assert_int_equal(hb_config_parse_string(RES "[tls]\nmode = on\npsk = keys/%n.psk\n" NODES,
                                          "/etc/r0.conf", "b", &c, err, sizeof err), 0);
  assert_int_equal(c.tls, HB_TLS_PSK);
  assert_int_equal(c.tls_off_line, 0);
  assert_string_equal(c.tls_psk, "/etc/keys/b.psk");
  assert_null(c.tls_ca);
  assert_string_equal(hb_tls_mode_name(c.tls), "psk");
  assert_null(c.tls_ciphersuites);
  hb_config_free(&c);

  /* ciphersuites: kept as written; dropped when TLS is off. */
  assert_int_equal(hb_config_parse_string(RES "[tls]\npsk = r0.psk\nciphersuites = "
                                          "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256\n"
                                          NODES, "/etc/r0.conf", "b", &c, err, sizeof err), 0);
  assert_string_equal(c.tls_ciphersuites,
                      "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
  hb_config_free(&c);
  assert_int_equal(hb_config_parse_string(RES "[tls]\nmode = off\n"
                                          "ciphersuites = TLS_AES_256_GCM_SHA384\n"
                                          NODES, "/etc/r0.conf", "b", &c, err, sizeof err), 0);
  assert_null(c.tls_ciphersuites);
  hb_config_free(&c);
}

/* ---- %n and relative paths -------------------------------------------- */

static void test_percent_n(void **state)
{
  static const char text[] =
    "[resource]\nname = r0\ncontrol = /run/%n/%%n-%n.ctl\n"
    "[tls]\nca = /ca.pem\ncert = /pki/%n/%n.pem\nkey = /pki/%%%n.key\n"
    "[node a]\ndisk = /img/%n.img\nmeta = /meta/%n\naddress = 10.0.0.1:7789\n"
    "[node b]\ndisk = /img/%n.img\naddress = 10.0.0.2:7789\ncontrol = /b%%.ctl\n";
  struct hb_config c;
  char err[256];

  for (int self = 0; self < 2; self++) {
    assert_int_equal(hb_config_parse_string(text, "/etc/r0.conf", self ? "b" : "a",
                                            &c, err, sizeof err), 0);
    assert_string_equal(c.tls_cert, self ? "/pki/b/b.pem" : "/pki/a/a.pem");
    assert_string_equal(c.tls_key, self ? "/pki/%b.key" : "/pki/%a.key");
    assert_string_equal(c.tls_ca, "/ca.pem");
    assert_string_equal(c.nodes[0].control, "/run/a/%n-a.ctl");
    assert_string_equal(c.nodes[1].control, "/b%.ctl");
    assert_string_equal(c.nodes[0].disk, "/img/a.img");
    assert_string_equal(c.nodes[1].disk, "/img/b.img");
    assert_string_equal(c.nodes[0].meta, "/meta/a");
    hb_config_free(&c);
  }
}

static void test_relative_paths(void **state)
{
  static const struct {
    const char *file, *path, *want;   /* want: NULL → cwd + "/" + path */
  } cases[] = {
    { "/etc/hablock/r0.conf", "disks/a.img", "/etc/hablock/disks/a.img" },
    { "/etc/hablock/r0.conf", "./a.img", "/etc/hablock/a.img" },
    { "/etc/hablock/r0.conf", ".//./a.img", "/etc/hablock/a.img" },
    { "/etc/hablock/r0.conf", "../a.img", "/etc/hablock/../a.img" },
    { "/etc/hablock/r0.conf", "/abs/a.img", "/abs/a.img" },
    { "/etc/hablock/r0.conf", "%n.img", "/etc/hablock/a.img" },
    { "/r0.conf", "a.img", "/a.img" },
    { "r0.conf", "a.img", NULL },
  };
  char cwd[PATH_MAX], want[PATH_MAX + 64], text[512], err[256];
  struct hb_config c;

  assert_non_null(getcwd(cwd, sizeof cwd));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(text, sizeof text, RES TLSOFF "[node a]\ndisk = %s\n"
             "address = 10.0.0.1:1\n" NODE_B, cases[i].path);
    if (cases[i].want)
      snprintf(want, sizeof want, "%s", cases[i].want);
    else
      snprintf(want, sizeof want, "%s/%s", cwd, cases[i].path);
    assert_int_equal(hb_config_parse_string(text, cases[i].file, "a", &c,
                                            err, sizeof err), 0);
    if (strcmp(c.nodes[0].disk, want) != 0)
      fail_msg("file %s, disk %s: got %s, want %s", cases[i].file,
               cases[i].path, c.nodes[0].disk, want);
    hb_config_free(&c);
  }

  /* A file name with a relative directory: cwd/conf/a.img. */
  snprintf(want, sizeof want, "%s/conf/x/a.img", cwd);
  assert_int_equal(hb_config_parse_string(RES TLSOFF "[node a]\ndisk = x/a.img\n"
                                          "address = h:1\n" NODE_B,
                                          "conf/r0.conf", "a", &c, err, sizeof err), 0);
  assert_string_equal(c.nodes[0].disk, want);
  hb_config_free(&c);
}

/* ---- values ------------------------------------------------------------ */

static int parse_resource_key(const char *line, struct hb_config *c,
                              char *err, size_t errlen)
{
  char text[512];

  snprintf(text, sizeof text, RES "%s\n" TLSOFF NODES, line);
  return hb_config_parse_string(text, "r0.conf", "a", c, err, errlen);
}

static void test_good_values(void **state)
{
  static const struct { const char *v; uint32_t ms; } durations[] = {
    { "100ms", 100 }, { "500ms", 500 }, { "5s", 5000 }, { "5 s", 5000 },
    { "2min", 120000 }, { "3600s", 3600000 }, { "60min", 3600000 },
  };
  static const struct { const char *v; uint64_t bytes; } sizes[] = {
    { "512", 512 }, { "1K", 1024 }, { "4KiB", 4096 }, { "8 M", 8u << 20 },
    { "3MiB", 3u << 20 }, { "10G", 10ull << 30 }, { "2GiB", 2ull << 30 },
    { "1T", 1ull << 40 }, { "5TiB", 5ull << 40 },
  };
  static const struct { const char *v, *host; uint16_t port; } addrs[] = {
    { "127.0.0.1:7789", "127.0.0.1", 7789 },
    { "10.0.0.1:1", "10.0.0.1", 1 },
    { "host.example.com:65535", "host.example.com", 65535 },
    { "ha-1:7789", "ha-1", 7789 },
    { "[::1]:7789", "::1", 7789 },
    { "[fe80::1%eth0]:7789", "fe80::1%eth0", 7789 },
    { "[2001:db8::7]:443", "2001:db8::7", 443 },
  };
  struct hb_config c;
  char line[128], text[512], err[256];

  for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
    snprintf(line, sizeof line, "request-timeout = %s", durations[i].v);
    if (parse_resource_key(line, &c, err, sizeof err) != 0)
      fail_msg("%s: %s", line, err);
    assert_int_equal(c.request_timeout_ms, durations[i].ms);
    hb_config_free(&c);
  }
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    snprintf(line, sizeof line, "size = %s", sizes[i].v);
    if (parse_resource_key(line, &c, err, sizeof err) != 0)
      fail_msg("%s: %s", line, err);
    assert_int_equal(c.size, sizes[i].bytes);
    hb_config_free(&c);
  }
  for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
    snprintf(text, sizeof text, RES TLSOFF NODE_A_ADDR("%s") NODE_B, addrs[i].v);
    if (hb_config_parse_string(text, "r0.conf", "b", &c, err, sizeof err) != 0)
      fail_msg("address %s: %s", addrs[i].v, err);
    assert_string_equal(c.nodes[0].address, addrs[i].v);
    assert_string_equal(c.nodes[0].host, addrs[i].host);
    assert_int_equal(c.nodes[0].port, addrs[i].port);
    hb_config_free(&c);
  }
  /* protocol c, a UTF-8 BOM, CRLF line ends, "key: value", comments. */
  assert_int_equal(hb_config_parse_string("\xEF\xBB\xBF# bom\r\n[resource]\r\n"
                                          "name: r0\r\nprotocol = c ; lower case\r\n"
                                          "\t\r\n" TLSOFF NODES,
                                          "r0.conf", "a", &c, err, sizeof err), 0);
  assert_string_equal(c.name, "r0");
  assert_int_equal(c.protocol, 'C');
  hb_config_free(&c);
}

/* ---- choosing this node ----------------------------------------------- */

static void test_match_host(void **state)
{
  static const char *const names[] = { "ha1", "HA2.example.com" };
  static const struct { const char *host; int want; } cases[] = {
    { "ha1", 0 }, { "HA1", 0 }, { "ha1.example.com", 0 },
    { "ha2.example.com", 1 }, { "ha2", -1 }, { "ha2.other.org", -1 },
    { "ha", -1 }, { "ha11", -1 }, { "", -1 }, { ".ha1", -1 },
  };

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (hb_config_match_host(names, 2, cases[i].host) != cases[i].want)
      fail_msg("host '%s': got %d, want %d", cases[i].host,
               hb_config_match_host(names, 2, cases[i].host), cases[i].want);
}

static void test_hostname(void **state)
{
  char host[256], text[1024], err[256], want[512];
  struct hb_config c;

  assert_int_equal(gethostname(host, sizeof host), 0);
  host[sizeof host - 1] = '\0';
  if (strlen(host) > HB_CONFIG_NAME_MAX || strchr(host, ' '))
    skip();

  /* This host as the second node: chosen without node=. */
  snprintf(text, sizeof text, RES TLSOFF NODE_A "[node %s]\ndisk = /dev/sdb\n"
           "address = 10.0.0.2:7789\n", host);
  if (hb_config_parse_string(text, "r0.conf", NULL, &c, err, sizeof err) != 0)
    fail_msg("host %s: %s", host, err);
  assert_int_equal(c.self, 1);
  assert_int_equal(c.peer, 0);
  assert_string_equal(hb_config_self(&c)->name, host);
  hb_config_free(&c);
  /* node= wins over the host name. */
  assert_int_equal(hb_config_parse_string(text, "r0.conf", "a", &c, err,
                                          sizeof err), 0);
  assert_int_equal(c.self, 0);
  hb_config_free(&c);

  /* Neither node is this host. */
  if (strcasecmp(host, "no-such-node-1") == 0)
    skip();
  assert_int_equal(hb_config_parse_string(RES TLSOFF
                                          "[node no-such-node-1]\ndisk=/a\naddress=h:1\n"
                                          "[node no-such-node-2]\ndisk=/b\naddress=h:2\n",
                                          "r0.conf", NULL, &c, err, sizeof err), -ENOENT);
  snprintf(want, sizeof want, "r0.conf: host name '%s' matches no [node] section "
           "(nodes: no-such-node-1, no-such-node-2); set node=NAME", host);
  assert_string_equal(err, want);
  check_empty(&c);
}

/* ---- errors ------------------------------------------------------------ */

struct err_case {
  const char *name;
  const char *text;
  const char *msg;
  int ret;                    /* 0: -EINVAL */
  const char *node;           /* NULL: "a" */
  bool prefix;                /* msg is a prefix of the message */
};

#define LONG50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

/* NAME, TEXT, MESSAGE with -EINVAL and node=a. */
#define E(n, t, m) { .name = n, .text = t, .msg = m }

static const struct err_case err_cases[] = {
  /* sections */
  E("unknown section", RES "[foo]\n",
    "r0.conf:3: [foo]: unknown section (expected [resource], [tls] or [node NAME])"),
  E("empty section name", RES "[]\n",
    "r0.conf:3: []: unknown section (expected [resource], [tls] or [node NAME])"),
  E("duplicate resource", RES "[resource]\n",
    "r0.conf:3: [resource]: duplicate section (first at line 1)"),
  E("duplicate tls", RES TLSOFF "[tls]\n",
    "r0.conf:5: [tls]: duplicate section (first at line 3)"),
  E("duplicate node", RES TLSOFF NODES "[node a]\n",
    "r0.conf:11: [node a]: duplicate node (first at line 5)"),
  E("duplicate node, case", RES TLSOFF NODES "[node A]\n",
    "r0.conf:11: [node A]: duplicate node (first at line 5)"),
  E("three nodes", RES TLSOFF NODES "[node c]\ndisk = /dev/sdc\n",
    "r0.conf:11: [node c]: more than two nodes (already have a and b)"),
  E("node without name", RES TLSOFF "[node]\n",
    "r0.conf:5: [node]: missing node name (write [node NAME])"),
  E("bad node name", RES TLSOFF "[node a/b]\n",
    "r0.conf:5: [node a/b]: bad node name (letters, digits, '.', '-' and '_', "
    "starting with a letter or digit, at most 63)"),
  E("node name too long", RES TLSOFF "[node " LONG50 "0123456789abcd]\n",
    "r0.conf:5: [node " LONG50 "0123456789abcd]: bad node name (letters, digits, "
    "'.', '-' and '_', starting with a letter or digit, at most 63)"),
  E("missing resource", TLSOFF NODES, "r0.conf: missing section [resource]"),
  E("one node", RES TLSOFF NODE_A,
    "r0.conf: need exactly two [node NAME] sections, found 1"),
  E("no node", RES TLSOFF, "r0.conf: need exactly two [node NAME] sections, found 0"),
  /* syntax */
  E("key outside section", "name = r0\n" RES,
    "r0.conf:1: name: key outside any section (put it under [resource], [tls] "
    "or [node NAME])"),
  E("missing ]", "[resource\n", "r0.conf:1: missing ']' in section header"),
  E("two byte-order marks", "\xEF\xBB\xBF\xEF\xBB\xBF[x=y]\n" RES,
    "r0.conf:1: a byte-order mark that is not the file's first bytes"),
  E("byte-order mark after a blank", "\t\xEF\xBB\xBF[=\n" RES,
    "r0.conf:1: a byte-order mark that is not the file's first bytes"),
  E("text after ]", "[resource] name = r0\n",
    "r0.conf:1: text after ']' in section header"),
  E("no =", RES "just some words\n", "r0.conf:3: expected KEY = VALUE or [SECTION]"),
  E("no key name", RES "= r0\n", "r0.conf:3: missing key name before '='"),
  E("comment before =", RES "protocol ; C = x\n",
    "r0.conf:3: expected KEY = VALUE or [SECTION]"),
  { .name = "line too long",
    .text = RES "control = /" LONG50 LONG50 LONG50 LONG50 "\n",
    .msg = "r0.conf:3: line too long (more than ", .prefix = true },
  /* keys */
  E("unknown key", RES "colour = blue\n", "r0.conf:3: [resource] colour: unknown key"),
  E("key in wrong section", RES "[tls]\ndisk = /dev/sda\n",
    "r0.conf:4: [tls] disk: unknown key"),
  E("unknown node key", RES TLSOFF NODE_A "port = 7789\n",
    "r0.conf:8: [node a] port: unknown key"),
  E("keys are lower case", RES "Protocol = C\n",
    "r0.conf:3: [resource] Protocol: unknown key"),
  E("duplicate key", RES "name = r1\n",
    "r0.conf:3: [resource] name: duplicate key (first at line 2)"),
  E("duplicate node key", RES TLSOFF NODE_A "disk = /dev/sdc\n",
    "r0.conf:8: [node a] disk: duplicate key (first at line 6)"),
  E("tls set twice", "[resource]\nname = r0\ntls = off\n[tls]\nmode = off\n",
    "r0.conf:5: [tls] mode: already set by [resource] tls at line 3"),
  E("missing name", "[resource]\nprotocol = C\n" TLSOFF NODES,
    "r0.conf:1: [resource]: missing required key 'name'"),
  E("missing disk", RES TLSOFF "[node a]\naddress = 10.0.0.1:7789\n" NODE_B,
    "r0.conf:5: [node a]: missing required key 'disk'"),
  E("missing address", RES TLSOFF NODE_A "[node b]\ndisk = /dev/sdb\n",
    "r0.conf:8: [node b]: missing required key 'address'"),
  /* values */
  E("empty value", RES TLSOFF "[node a]\ndisk =\n",
    "r0.conf:6: [node a] disk: missing value"),
  E("empty after comment", RES "control = ; none\n",
    "r0.conf:3: [resource] control: missing value"),
  E("bad resource name", "[resource]\nname = r0/x\n",
    "r0.conf:2: [resource] name: bad name 'r0/x' (letters, digits, '.', '-' and '_', "
    "starting with a letter or digit, at most 63)"),
  E("name starting with -", "[resource]\nname = -r0\n",
    "r0.conf:2: [resource] name: bad name '-r0' (letters, digits, '.', '-' and '_', "
    "starting with a letter or digit, at most 63)"),
  E("protocol A", RES "protocol = A\n",
    "r0.conf:3: [resource] protocol: protocol A is not supported (only C)"),
  E("protocol X", RES "protocol = X\n", "r0.conf:3: [resource] protocol: expected C"),
  E("duration 0", RES "ping-interval = 0s\n",
    "r0.conf:3: [resource] ping-interval: must be positive"),
  E("duration no unit", RES "ping-timeout = 5\n",
    "r0.conf:3: [resource] ping-timeout: missing unit (ms, s or min)"),
  E("duration bad unit", RES "connect-timeout = 5h\n",
    "r0.conf:3: [resource] connect-timeout: unknown unit 'h' (ms, s or min)"),
  E("duration fraction", RES "connect-timeout = 1.5s\n",
    "r0.conf:3: [resource] connect-timeout: unknown unit '.5s' (ms, s or min)"),
  E("request timeout zero", RES "request-timeout = 0s\n",
    "r0.conf:3: [resource] request-timeout: must be positive"),
  E("ping timeout not longer than the interval", RES "ping-timeout = 1s\n" TLSOFF NODES,
    "r0.conf:3: [resource] ping-timeout (1000ms) must be longer than ping-interval (1000ms)"),
  E("ping interval past the default timeout", RES "ping-interval = 5s\n" TLSOFF NODES,
    "r0.conf:3: [resource] ping-timeout (2000ms) must be longer than ping-interval (5000ms)"),
  E("ping interval too short", RES "ping-interval = 1ms\n" TLSOFF NODES,
    "r0.conf:3: [resource] ping-interval: 1ms is too short (at least 10ms)"),
  E("connect timeout too short", RES "connect-timeout = 1ms\n" TLSOFF NODES,
    "r0.conf:3: [resource] connect-timeout: 1ms is too short (at least 100ms)"),
  E("duration negative", RES "ping-interval = -1s\n",
    "r0.conf:3: [resource] ping-interval: expected a duration such as 500ms or 5s"),
  E("duration too long", RES "ping-interval = 3601s\n",
    "r0.conf:3: [resource] ping-interval: too long (at most 3600s)"),
  E("duration overflow", RES "ping-interval = 99999999999999999999999ms\n",
    "r0.conf:3: [resource] ping-interval: too long (at most 3600s)"),
  E("size 0", RES "size = 0\n", "r0.conf:3: [resource] size: must be positive"),
  E("size unaligned", RES "size = 1000\n",
    "r0.conf:3: [resource] size: must be a multiple of 512 bytes"),
  E("size bad unit", RES "size = 10X\n",
    "r0.conf:3: [resource] size: unknown unit 'X' (K, M, G or T; 1K = 1024)"),
  E("size not a number", RES "size = big\n",
    "r0.conf:3: [resource] size: expected a size such as 10G or 1048576"),
  E("size too large", RES "size = 8388608T\n", "r0.conf:3: [resource] size: too large"),
  E("mode", RES "[tls]\nmode = maybe\n", "r0.conf:4: [tls] mode: expected on or off"),
  E("tls", RES "tls = no\n", "r0.conf:3: [resource] tls: expected on or off"),
  E("path in quotes", RES TLSOFF "[node a]\ndisk = \"/dev/sda\"\n",
    "r0.conf:6: [node a] disk: quotes are not needed: write the path as it is"),
  E("bad escape", RES "[tls]\ncert = /pki/%h.pem\n",
    "r0.conf:4: [tls] cert: bad escape '%h' (only %n and %% are expanded)"),
  E("escape at end", RES "control = /run/x%\n",
    "r0.conf:3: [resource] control: bad escape '%' (only %n and %% are expanded)"),
  /* addresses: the example is line 7 */
  E("address no port", RES TLSOFF NODE_A_ADDR("10.0.0.1"),
    "r0.conf:7: [node a] address: missing port"),
  E("address empty port", RES TLSOFF NODE_A_ADDR("10.0.0.1:"),
    "r0.conf:7: [node a] address: missing port"),
  E("address port 0", RES TLSOFF NODE_A_ADDR("10.0.0.1:0"),
    "r0.conf:7: [node a] address: bad port '0' (expected 1 to 65535)"),
  E("address port 65536", RES TLSOFF NODE_A_ADDR("10.0.0.1:65536"),
    "r0.conf:7: [node a] address: bad port '65536' (expected 1 to 65535)"),
  E("address port name", RES TLSOFF NODE_A_ADDR("10.0.0.1:drbd"),
    "r0.conf:7: [node a] address: bad port 'drbd' (expected 1 to 65535)"),
  E("address no host", RES TLSOFF NODE_A_ADDR(":7789"),
    "r0.conf:7: [node a] address: missing host"),
  E("address bad IPv4", RES TLSOFF NODE_A_ADDR("300.0.0.1:7789"),
    "r0.conf:7: [node a] address: bad IPv4 address '300.0.0.1'"),
  E("address bad host", RES TLSOFF NODE_A_ADDR("ha!1:7789"),
    "r0.conf:7: [node a] address: bad host name 'ha!1'"),
  E("address bare IPv6", RES TLSOFF NODE_A_ADDR("fd00::1:7789"),
    "r0.conf:7: [node a] address: an IPv6 address needs brackets, as in [fe80::1]:7789"),
  E("address IPv6 no ]", RES TLSOFF NODE_A_ADDR("[fd00::1:7789"),
    "r0.conf:7: [node a] address: missing ']' after the IPv6 address"),
  E("address IPv6 no port", RES TLSOFF NODE_A_ADDR("[fd00::1]"),
    "r0.conf:7: [node a] address: missing port"),
  E("address IPv6 no colon", RES TLSOFF NODE_A_ADDR("[fd00::1]7789"),
    "r0.conf:7: [node a] address: expected ':PORT' after ']'"),
  E("address bad IPv6", RES TLSOFF NODE_A_ADDR("[fd00::g]:7789"),
    "r0.conf:7: [node a] address: bad IPv6 address 'fd00::g'"),
  E("address IPv6 empty", RES TLSOFF NODE_A_ADDR("[]:7789"),
    "r0.conf:7: [node a] address: missing host"),
  E("same address", RES TLSOFF NODE_A "[node b]\ndisk = /dev/sdb\n"
    "address = 10.0.0.1:7789\n",
    "r0.conf:10: [node b] address: same as [node a]"),
  /* TLS */
  E("cert and psk", RES "[tls]\nca = ca.pem\ncert = c.pem\nkey = k.pem\npsk = r0.psk\n" NODES,
    "r0.conf:7: [tls] psk: cert and psk are mutually exclusive"),
  E("psk and cert", RES "[tls]\npsk = r0.psk\ncert = c.pem\n" NODES,
    "r0.conf:5: [tls] cert: cert and psk are mutually exclusive"),
  E("neither cert nor psk", RES "[tls]\nca = ca.pem\n" NODES,
    "r0.conf:3: [tls]: TLS is on but neither cert nor psk is set (mode = off turns it off)"),
  E("no tls section", RES NODES,
    "r0.conf: [tls]: TLS is on but neither cert nor psk is set (mode = off turns it off)"),
  E("tls on explicitly", RES "[tls]\nmode = on\n" NODES,
    "r0.conf:3: [tls]: TLS is on but neither cert nor psk is set (mode = off turns it off)"),
  E("cert without key", RES "[tls]\nca = ca.pem\ncert = c.pem\n" NODES,
    "r0.conf:5: [tls] cert: key is required with cert"),
  E("cert without ca", RES "[tls]\ncert = c.pem\nkey = k.pem\n" NODES,
    "r0.conf:4: [tls] cert: ca is required with cert"),
  E("psk with ca", RES "[tls]\npsk = r0.psk\nca = ca.pem\n" NODES,
    "r0.conf:5: [tls] ca: not used with psk"),
  E("psk with key", RES "[tls]\npsk = r0.psk\nkey = k.pem\n" NODES,
    "r0.conf:5: [tls] key: not used with psk"),
  E("ciphersuites unknown", RES "[tls]\nciphersuites = TLS_AES_128_GCM_SHA256:RC4-MD5\n" NODES,
    "r0.conf:4: [tls] ciphersuites: unknown TLS 1.3 cipher suite 'RC4-MD5' (known: "
    "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, "
    "TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256)"),
  E("ciphersuites empty name", RES "[tls]\nciphersuites = TLS_AES_128_GCM_SHA256:\n" NODES,
    "r0.conf:4: [tls] ciphersuites: empty cipher suite name in 'TLS_AES_128_GCM_SHA256:'"),
  E("ciphersuites SHA-384 with psk", RES "[tls]\npsk = r0.psk\n"
    "ciphersuites = TLS_AES_256_GCM_SHA384\n" NODES,
    "r0.conf:5: [tls] ciphersuites: cipher suite TLS_AES_256_GCM_SHA384 cannot be used"
    " with a PSK (its hash is not SHA-256)"),
  /* this node */
  { .name = "node= not found", .text = RES TLSOFF NODES, .node = "c", .ret = -ENOENT,
    .msg = "r0.conf: node=c: no [node c] section (nodes: a, b)" },
  { .name = "node= is exact", .text = RES TLSOFF NODES, .node = "A", .ret = -ENOENT,
    .msg = "r0.conf: node=A: no [node A] section (nodes: a, b)" },
  /* the first error wins */
  E("first error wins", RES "colour = blue\n[foo]\n",
    "r0.conf:3: [resource] colour: unknown key"),
};

static void test_error(void **state)
{
  const struct err_case *c = *state;
  int want = c->ret ? c->ret : -EINVAL;
  struct hb_config cfg;
  char err[512];
  int r;

  memset(err, 'x', sizeof err);
  r = hb_config_parse_string(c->text, "r0.conf", c->node ? c->node : "a",
                             &cfg, err, sizeof err);
  if (r != want ||
      (c->prefix ? strncmp(err, c->msg, strlen(c->msg)) : strcmp(err, c->msg)) != 0)
    fail_msg("%s: got %d '%s'\n            want %d '%s'%s", c->name, r,
             r ? err : "", want, c->msg, c->prefix ? "..." : "");
  assert_null(strchr(err, '\n'));
  check_empty(&cfg);
}

/* A small error buffer truncates; none at all is fine. */
static void test_errbuf(void **state)
{
  struct hb_config c;
  char err[8];

  assert_int_equal(hb_config_parse_string(RES "[foo]\n", "r0.conf", "a", &c,
                                          err, sizeof err), -EINVAL);
  assert_string_equal(err, "r0.conf");
  assert_int_equal(hb_config_parse_string(RES "[foo]\n", "r0.conf", "a", &c,
                                          NULL, 0), -EINVAL);
}

/* ---- files ------------------------------------------------------------- */

static char tmpdir[] = "/tmp/test-config.XXXXXX";

static void write_file(const char *path, const void *data, size_t len)
{
  FILE *f = fopen(path, "w");

  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static void test_load(void **state)
{
  static const char nul[] = RES "\0" TLSOFF;
  char path[256], err[512], want[512];
  struct hb_config c;

  /* A file on disk, relative paths from its directory. */
  snprintf(path, sizeof path, "%s/r0.conf", tmpdir);
  write_file(path, RES TLSOFF "[node a]\ndisk = a.img\naddress = h:1\n" NODE_B,
             sizeof RES TLSOFF "[node a]\ndisk = a.img\naddress = h:1\n" NODE_B - 1);
  assert_int_equal(hb_config_load(path, "a", &c, err, sizeof err), 0);
  snprintf(want, sizeof want, "%s/a.img", tmpdir);
  assert_string_equal(c.nodes[0].disk, want);
  assert_string_equal(c.file, path);
  hb_config_free(&c);

  /* Errors name the file as given. */
  write_file(path, RES "[foo]\n", sizeof RES "[foo]\n" - 1);
  assert_int_equal(hb_config_load(path, "a", &c, err, sizeof err), -EINVAL);
  snprintf(want, sizeof want, "%s:3: [foo]: unknown section (expected [resource], "
           "[tls] or [node NAME])", path);
  assert_string_equal(err, want);
  check_empty(&c);

  snprintf(path, sizeof path, "%s/missing.conf", tmpdir);
  assert_int_equal(hb_config_load(path, "a", &c, err, sizeof err), -ENOENT);
  snprintf(want, sizeof want, "%s: No such file or directory", path);
  assert_string_equal(err, want);
  check_empty(&c);

  assert_int_equal(hb_config_load(tmpdir, "a", &c, err, sizeof err), -EISDIR);
  snprintf(want, sizeof want, "%s: Is a directory", tmpdir);
  assert_string_equal(err, want);

  snprintf(path, sizeof path, "%s/nul.conf", tmpdir);
  write_file(path, nul, sizeof nul - 1);
  assert_int_equal(hb_config_load(path, "a", &c, err, sizeof err), -EINVAL);
  snprintf(want, sizeof want, "%s:3: NUL byte (not a text file?)", path);
  assert_string_equal(err, want);

  /* Larger than HB_CONFIG_FILE_MAX. */
  size_t big = HB_CONFIG_FILE_MAX + 1;
  char *data = malloc(big);
  assert_non_null(data);
  memset(data, '\n', big);
  data[0] = '#';
  snprintf(path, sizeof path, "%s/big.conf", tmpdir);
  write_file(path, data, big);
  free(data);
  assert_int_equal(hb_config_load(path, "a", &c, err, sizeof err), -EFBIG);
  snprintf(want, sizeof want, "%s: file too large (more than %u bytes)", path,
           HB_CONFIG_FILE_MAX);
  assert_string_equal(err, want);
}

/* docs/r0.conf.example stays valid. */
static void test_example(void **state)
{
  const char *src = getenv("HABLOCK_SRCDIR");
  char path[PATH_MAX], err[512];
  struct hb_config c;

  if (!src)
    skip();
  snprintf(path, sizeof path, "%s/docs/r0.conf.example", src);
  if (hb_config_load(path, "ha2", &c, err, sizeof err) != 0)
    fail_msg("%s", err);
  assert_string_equal(c.name, "r0");
  assert_int_equal(c.tls, HB_TLS_CERT);
  assert_string_equal(c.tls_cert, "/etc/hablock/ha2.pem");
  assert_string_equal(c.tls_key, "/etc/hablock/ha2.key");
  assert_string_equal(c.tls_ca, "/etc/hablock/ca.pem");
  assert_int_equal(c.self, 1);
  assert_string_equal(c.nodes[0].name, "ha1");
  assert_string_equal(c.nodes[0].disk, "/dev/vdb");
  assert_string_equal(c.nodes[0].meta, "/var/lib/hablock/r0.meta");
  assert_string_equal(c.nodes[1].host, "192.168.122.12");
  assert_int_equal(c.nodes[1].port, 7789);
  assert_string_equal(c.nodes[1].control, "/run/hablock/r0.ctl");
  hb_config_free(&c);
}

int main(void)
{
  static const struct CMUnitTest fixed[] = {
    cmocka_unit_test(test_full),
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_tls_modes),
    cmocka_unit_test(test_percent_n),
    cmocka_unit_test(test_relative_paths),
    cmocka_unit_test(test_good_values),
    cmocka_unit_test(test_match_host),
    cmocka_unit_test(test_hostname),
    cmocka_unit_test(test_errbuf),
    cmocka_unit_test(test_load),
    cmocka_unit_test(test_example),
  };
  const size_t nfixed = sizeof fixed / sizeof fixed[0];
  const size_t nerr = sizeof err_cases / sizeof err_cases[0];
  struct CMUnitTest *tests = calloc(nfixed + nerr, sizeof *tests);
  int r;

  if (!tests || !mkdtemp(tmpdir))
    return 1;
  memcpy(tests, fixed, sizeof fixed);
  for (size_t i = 0; i < nerr; i++) {
    tests[nfixed + i].name = err_cases[i].name;
    tests[nfixed + i].test_func = test_error;
    tests[nfixed + i].initial_state = (void *) &err_cases[i];
  }
  r = _cmocka_run_group_tests("config", tests, nfixed + nerr, NULL, NULL);
  free(tests);
  /* Best effort: the files test_load wrote. */
  static const char *const files[] = { "r0.conf", "nul.conf", "big.conf" };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, files[i]);
    unlink(path);
  }
  rmdir(tmpdir);
  return r;
}
