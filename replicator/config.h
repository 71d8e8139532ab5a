/* The resource configuration file (r0.conf): pure parsing, no I/O except
 * reading the file itself and asking for the host name.
 *
 * The same file is used on both nodes, like a DRBD resource file. It is an
 * INI file read with inih; docs/configuration.md describes every key, its
 * default and the errors, docs/r0.conf.example is an annotated example.
 *
 *   [resource]   name, protocol, control, size, ping-interval, ping-timeout,
 *                connect-timeout, tls
 *   [tls]        mode, ca, cert, key, psk, ciphersuites
 *   [node NAME]  disk, meta, address, control   (exactly two of them)
 *
 * Paths are made absolute: a relative path is taken relative to the
 * directory of the configuration file. "%n" in a path expands to a node's
 * name ("%%" to "%"): in [node NAME] and in control, to that node; in [tls],
 * to this node (the one the file is loaded for).
 *
 * Errors fill the buffer with one line, "FILE:LINE: [SECTION] KEY: problem"
 * (LINE is left out when the problem has no line, such as a missing
 * section), and return a negative errno: -EINVAL for the file's content,
 * -ENOENT when no [node] section is this node's, the error of open/read for
 * the file, -ENOMEM. Nothing is printed.
 */
#ifndef HB_CONFIG_H
#define HB_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define HB_CONFIG_NODES 2

/* Defaults of the [resource] keys. */
#define HB_CONFIG_PING_INTERVAL_MS   1000u
#define HB_CONFIG_PING_TIMEOUT_MS    2000u
#define HB_CONFIG_CONNECT_TIMEOUT_MS 10000u
#define HB_CONFIG_REQUEST_TIMEOUT_MS 30000u
#define HB_CONFIG_CONTROL_DIR        "/run/hablock"

/* Limits of the values. */
#define HB_CONFIG_NAME_MAX      63          /* resource and node names */
#define HB_CONFIG_DURATION_MAX  3600000u    /* 1 hour, in ms */
#define HB_CONFIG_SIZE_ALIGN    512u
#define HB_CONFIG_FILE_MAX      (1u << 20)  /* hb_config_load refuses more */

enum hb_tls_mode {
  HB_TLS_CERT,  /* mutual TLS with certificates: ca, cert, key */
  HB_TLS_PSK,   /* TLS-PSK (ECDHE-PSK only): psk */
  HB_TLS_OFF,   /* insecure, explicit choice (benchmarks): log a warning */
};

struct hb_config_node {
  char *name;
  char *disk;          /* absolute path */
  char *meta;          /* absolute path, "internal", or NULL when unset */
  char *address;       /* as written: HOST:PORT, [IPV6]:PORT */
  char *host;          /* HOST, or IPV6 without the brackets */
  uint16_t port;
  char *control;       /* control socket: [node] control, else [resource] */
  unsigned line;       /* line of the [node NAME] header */
};

struct hb_config {
  char *file;          /* the name given to the parser, for messages */
  char *name;          /* resource name */
  char protocol;       /* 'C' */
  uint64_t size;       /* exported size in bytes; 0: the disk's size */
  uint32_t ping_interval_ms;   /* an idle link sends a PING this often */
  uint32_t ping_timeout_ms;    /* the PONG must arrive within this */
  uint32_t connect_timeout_ms; /* connect + TLS + handshake */
  uint32_t request_timeout_ms; /* a sent request must be answered within this */
  enum hb_tls_mode tls;
  unsigned tls_off_line;       /* where TLS was turned off (0: it is on) */
  char *tls_ca;        /* HB_TLS_CERT: CA that signs the peer's certificate */
  char *tls_cert;      /* HB_TLS_CERT: this node's certificate (%n expanded) */
  char *tls_key;       /* HB_TLS_CERT: this node's key (%n expanded) */
  char *tls_psk;       /* HB_TLS_PSK: the PSK file */
  char *tls_ciphersuites; /* TLS on: suites to offer; NULL: the defaults */
  struct hb_config_node nodes[HB_CONFIG_NODES]; /* in file order */
  unsigned self;       /* index of this node in nodes[] */
  unsigned peer;       /* index of the other one */
};

/* Read and check PATH. NODE is this node's name (node=); NULL means the
 * host name (gethostname). On failure *out is left empty (freeing it is
 * harmless) and err holds one line. */
int hb_config_load(const char *path, const char *node,
                   struct hb_config *out, char *err, size_t errlen);

/* The same from a string; FILE names it in messages and its directory is
 * the base of relative paths (the current directory when FILE has no
 * slash). */
int hb_config_parse_string(const char *text, const char *file,
                           const char *node, struct hb_config *out,
                           char *err, size_t errlen);

void hb_config_free(struct hb_config *c);

static inline const struct hb_config_node *
hb_config_self(const struct hb_config *c)
{
  return &c->nodes[c->self];
}

static inline const struct hb_config_node *
hb_config_peer(const struct hb_config *c)
{
  return &c->nodes[c->peer];
}

const char *hb_tls_mode_name(enum hb_tls_mode mode);

/* Which of the N node names is HOSTNAME: an exact match (ignoring case),
 * else the host name's first label ("a" for "a.example.com"). Returns the
 * index, or -1. */
int hb_config_match_host(const char *const names[], unsigned n,
                         const char *hostname);

#endif
