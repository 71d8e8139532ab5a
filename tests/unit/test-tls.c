/* The TLS channel: two channels in memory, ciphertext pumped between them.
 * Certificates come from tests/tls/mkcerts.sh, run into a temporary
 * directory; every test is skipped when the openssl CLI is missing. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

static char certdir[1024];
static bool have_certs;

/* A file in the certificate directory; eight rotating buffers. */
static const char *P(const char *name)
{
  static char bufs[8][PATH_MAX];
  static unsigned next;
  char *b = bufs[next++ % 8];

  snprintf(b, PATH_MAX, "%s/%s", certdir, name);
  return b;
}

static int group_setup(void **state)
{
  const char *src = getenv("HABLOCK_SRCDIR");
  char cmd[2 * PATH_MAX + 64];
  int rc;

  if (!src) {
    fprintf(stderr, "# HABLOCK_SRCDIR unset: skipping\n");
    return 0;
  }
  snprintf(certdir, sizeof certdir, "%s/hb-tls-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(certdir))
    return -1;
  snprintf(cmd, sizeof cmd, "sh '%s/tests/tls/mkcerts.sh' '%s' >&2", src,
           certdir);
  rc = system(cmd);
  if (rc == -1 || !WIFEXITED(rc))
    return -1;
  if (WEXITSTATUS(rc) == 77) {
    fprintf(stderr, "# openssl CLI not found: skipping\n");
    return 0;
  }
  if (WEXITSTATUS(rc) != 0)
    return -1;
  have_certs = true;
  return 0;
}

static int group_teardown(void **state)
{
  char cmd[PATH_MAX + 16];

  if (certdir[0] && strstr(certdir, "hb-tls-")) {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
    if (system(cmd) != 0)
      return -1;
  }
  return 0;
}

#define NEED_CERTS() do { if (!have_certs) skip(); } while (0)

/* ---- contexts and channels ---------------------------------------------- */

static struct hb_tls_ctx *ctx_certs_suites(const char *ca, const char *cert,
                                           const char *peer, const char *suites)
{
  char cafile[64], crt[64], key[64], err[256] = "";
  struct hb_tls_config cfg;
  struct hb_tls_ctx *c = NULL;
  const char *keyname = cert;

  /* alpha-expired.crt is alpha's key with old dates. */
  if (strcmp(cert, "alpha-expired") == 0)
    keyname = "alpha";
  snprintf(cafile, sizeof cafile, "%s.crt", ca);
  snprintf(crt, sizeof crt, "%s.crt", cert);
  snprintf(key, sizeof key, "%s.key", keyname);
  cfg = (struct hb_tls_config) {
    .ca_file = P(cafile), .cert_file = P(crt), .key_file = P(key),
    .peer_name = peer, .ciphersuites = suites,
  };
  if (hb_tls_ctx_new(&cfg, &c, err, sizeof err) != 0)
    fail_msg("ctx %s/%s: %s", ca, cert, err);
  assert_false(hb_tls_ctx_is_psk(c));
  return c;
}

static struct hb_tls_ctx *ctx_certs(const char *ca, const char *cert,
                                    const char *peer)
{
  return ctx_certs_suites(ca, cert, peer, NULL);
}

static struct hb_tls_ctx *ctx_psk(const char *file, const char *id)
{
  struct hb_tls_config cfg = { .psk_file = P(file), .psk_identity = id };
  struct hb_tls_ctx *c = NULL;
  char err[256] = "";

  if (hb_tls_ctx_new(&cfg, &c, err, sizeof err) != 0)
    fail_msg("psk ctx %s: %s", file, err);
  assert_true(hb_tls_ctx_is_psk(c));
  return c;
}

static struct hb_tls *chan(struct hb_tls_ctx *ctx, enum hb_tls_side side)
{
  struct hb_tls *t = NULL;
  char err[256] = "";

  if (hb_tls_new(ctx, side, &t, err, sizeof err) != 0)
    fail_msg("channel: %s", err);
  assert_string_equal(hb_tls_error(t), "");
  assert_false(hb_tls_established(t));
  return t;
}

/* A channel that holds the only reference to its context. */
static struct hb_tls *chan_own(struct hb_tls_ctx *ctx, enum hb_tls_side side)
{
  struct hb_tls *t = chan(ctx, side);

  hb_tls_ctx_free(ctx);
  return t;
}

/* Move what `from` has to send into `to`. Returns bytes moved. */
static size_t pump(struct hb_tls *from, struct hb_tls *to)
{
  size_t moved = 0;

  for (;;) {
    const void *p;
    size_t n = hb_tls_pending_out(from, &p), m;

    if (n == 0)
      break;
    m = hb_tls_feed(to, p, n);
    hb_tls_consume_out(from, m);
    moved += m;
    if (m < n)
      break;
  }
  return moved;
}

struct pair {
  struct hb_tls *c, *s;
  int rc_c, rc_s;
};

static bool done(int rc)
{
  return rc != -EAGAIN;
}

/* Run both handshakes until each finished or failed. A client that
 * finished then reads once: a server's refusal of the client certificate
 * arrives after the client's handshake is complete (TLS 1.3). */
static void run(struct pair *p)
{
  unsigned char b;
  int i;

  p->rc_c = p->rc_s = -EAGAIN;
  for (i = 0; i < 50; i++) {
    size_t moved;

    p->rc_c = hb_tls_handshake(p->c);
    p->rc_s = hb_tls_handshake(p->s);
    moved = pump(p->c, p->s) + pump(p->s, p->c);
    if (done(p->rc_c) && done(p->rc_s) && moved == 0)
      break;
    if (moved == 0 && !done(p->rc_c) && !done(p->rc_s))
      break;  /* stuck */
  }
  if (p->rc_c == 0) {
    ssize_t r = hb_tls_read(p->c, &b, 1);

    p->rc_c = r == -EAGAIN ? 0 : (int) r;
  }
  if (p->rc_s == 0) {
    ssize_t r = hb_tls_read(p->s, &b, 1);

    p->rc_s = r == -EAGAIN ? 0 : (int) r;
  }
}

static struct pair connect_ctx(struct hb_tls_ctx *cc, struct hb_tls_ctx *sc)
{
  struct pair p = { chan(cc, HB_TLS_CLIENT), chan(sc, HB_TLS_SERVER), 0, 0 };

  hb_tls_ctx_free(cc);  /* the channels hold their own references */
  hb_tls_ctx_free(sc);
  run(&p);
  return p;
}

static void pair_free(struct pair *p)
{
  hb_tls_free(p->c);
  hb_tls_free(p->s);
}

static void assert_fails(struct hb_tls *t, int rc, int want, const char *msg)
{
  const char *err = hb_tls_error(t);

  fprintf(stderr, "# %s: %s\n", hb_tls_established(t) ? "?" : "refused",
          err);
  if (rc != want || !strstr(err, msg))
    fail_msg("got %d \"%s\", want %d \"%s\"", rc, err, want, msg);
  assert_null(strchr(err, '\n'));
  assert_false(hb_tls_established(t));
  /* Failure is final. */
  assert_int_equal(hb_tls_handshake(t), want);
  assert_int_equal(hb_tls_write(t, "x", 1), want);
}

/* Refused for a reason the test does not pin down. */
static void assert_refused(struct hb_tls *t, int rc)
{
  const char *err = hb_tls_error(t);

  fprintf(stderr, "# refused: %s\n", err);
  assert_true(rc < 0 && rc != -EAGAIN);
  assert_true(err[0] != '\0');
  assert_null(strchr(err, '\n'));
  assert_false(hb_tls_established(t));
}

/* ---- success ------------------------------------------------------------ */

static void test_handshake_ok(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "alpha", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  if (p.rc_c || p.rc_s)
    fail_msg("client %d \"%s\", server %d \"%s\"", p.rc_c,
             hb_tls_error(p.c), p.rc_s, hb_tls_error(p.s));
  assert_true(hb_tls_established(p.c));
  assert_true(hb_tls_established(p.s));
  assert_string_equal(hb_tls_version(p.c), "TLSv1.3");
  assert_string_equal(hb_tls_version(p.s), "TLSv1.3");
  /* The default list puts AES-128-GCM first. */
  assert_string_equal(hb_tls_cipher(p.c), "TLS_AES_128_GCM_SHA256");
  assert_string_equal(hb_tls_cipher(p.s), hb_tls_cipher(p.c));
  assert_string_equal(hb_tls_peer(p.c), "bravo");
  assert_string_equal(hb_tls_peer(p.s), "alpha");
  pair_free(&p);
}

/* A certificate without SAN DNS entries is matched by its CN. */
static void test_cn_only(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "cn-only", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_int_equal(p.rc_s, 0);
  assert_int_equal(p.rc_c, 0);
  assert_string_equal(hb_tls_peer(p.s), "alpha");
  pair_free(&p);
}

static unsigned char *pattern(size_t n, unsigned seed)
{
  unsigned char *b = malloc(n);
  size_t i;

  assert_non_null(b);
  for (i = 0; i < n; i++)
    b[i] = (unsigned char) (i * 131 + seed + (i >> 12));
  return b;
}

/* Send total bytes from one side to the other through the zero-copy
 * entry points, in whatever pieces the channels take. */
static void transfer(struct hb_tls *from, struct hb_tls *to, size_t total,
                     unsigned seed)
{
  unsigned char *src = pattern(total, seed), *dst = malloc(total);
  size_t sent = 0, got = 0;
  unsigned rounds = 0;

  assert_non_null(dst);
  while (got < total) {
    const void *out;
    void *in;
    size_t n, m;
    ssize_t r;

    if (sent < total) {
      r = hb_tls_write(from, src + sent, total - sent);
      if (r != -EAGAIN) {
        assert_true(r > 0);
        sent += (size_t) r;
      }
    }
    n = hb_tls_pending_out(from, &out);
    m = hb_tls_in_space(to, &in);
    if (m < n)
      n = m;
    memcpy(in, out, n);
    hb_tls_in_commit(to, n);
    hb_tls_consume_out(from, n);
    while (got < total &&
           (r = hb_tls_read(to, dst + got, total - got)) != -EAGAIN) {
      assert_true(r > 0);
      got += (size_t) r;
    }
    assert_true(++rounds < 100000);
  }
  assert_memory_equal(src, dst, total);
  free(src);
  free(dst);
}

static void test_data(void **state)
{
  struct pair p;
  const void *out, *out2;
  unsigned char copy[64], big[5000];
  size_t n, n2;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "alpha", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_int_equal(p.rc_c, 0);
  assert_int_equal(p.rc_s, 0);

  transfer(p.c, p.s, 3u << 20, 1);
  transfer(p.s, p.c, 3u << 20, 2);
  transfer(p.c, p.s, 1, 3);
  transfer(p.s, p.c, 100000, 4);

  /* Pending ciphertext stays put while more is queued behind it. */
  assert_int_equal(hb_tls_write(p.c, "hello", 5), 5);
  n = hb_tls_pending_out(p.c, &out);
  assert_true(n > 5 && n <= sizeof copy);
  memcpy(copy, out, n);
  memset(big, 'b', sizeof big);
  assert_int_equal(hb_tls_write(p.c, big, sizeof big), (ssize_t) sizeof big);
  n2 = hb_tls_pending_out(p.c, &out2);
  assert_ptr_equal(out, out2);
  assert_true(n2 > n + sizeof big);
  assert_memory_equal(out2, copy, n);
  pump(p.c, p.s);
  {
    char buf[8000];
    ssize_t r = hb_tls_read(p.s, buf, sizeof buf);

    assert_int_equal(r, 5);
    assert_memory_equal(buf, "hello", 5);
    r = hb_tls_read(p.s, buf, sizeof buf);
    assert_int_equal(r, (ssize_t) sizeof big);
    assert_int_equal(hb_tls_read(p.s, buf, sizeof buf), -EAGAIN);
  }
  assert_int_equal(hb_tls_read(p.c, copy, 1), -EAGAIN);
  pair_free(&p);
}

/* ciphersuites: what both sides name is used; the client's order decides
 * (both nodes read the same file); nothing in common is refused. */
static void test_suites(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs_suites("ca", "alpha", "bravo", "TLS_AES_256_GCM_SHA384"),
                  ctx_certs_suites("ca", "bravo", "alpha", "TLS_AES_256_GCM_SHA384"));
  if (p.rc_c || p.rc_s)
    fail_msg("client %d \"%s\", server %d \"%s\"", p.rc_c,
             hb_tls_error(p.c), p.rc_s, hb_tls_error(p.s));
  assert_string_equal(hb_tls_cipher(p.c), "TLS_AES_256_GCM_SHA384");
  assert_string_equal(hb_tls_cipher(p.s), "TLS_AES_256_GCM_SHA384");
  transfer(p.c, p.s, 100000, 7);
  pair_free(&p);

  p = connect_ctx(ctx_certs_suites("ca", "alpha", "bravo",
                                   "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"),
                  ctx_certs("ca", "bravo", "alpha"));
  if (p.rc_c || p.rc_s)
    fail_msg("client %d \"%s\", server %d \"%s\"", p.rc_c,
             hb_tls_error(p.c), p.rc_s, hb_tls_error(p.s));
  assert_string_equal(hb_tls_cipher(p.s), "TLS_CHACHA20_POLY1305_SHA256");
  transfer(p.s, p.c, 100000, 8);
  pair_free(&p);

  p = connect_ctx(ctx_certs_suites("ca", "alpha", "bravo", "TLS_AES_256_GCM_SHA384"),
                  ctx_certs_suites("ca", "bravo", "alpha", "TLS_CHACHA20_POLY1305_SHA256"));
  assert_refused(p.c, p.rc_c);
  assert_fails(p.s, p.rc_s, -EPROTO, "no shared cipher");
  pair_free(&p);
}

static void test_close(void **state)
{
  struct pair p;
  char b[16];

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "alpha", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_int_equal(p.rc_s, 0);
  assert_int_equal(hb_tls_write(p.c, "bye", 3), 3);
  assert_int_equal(hb_tls_shutdown(p.c), 0);
  pump(p.c, p.s);
  assert_int_equal(hb_tls_read(p.s, b, sizeof b), 3);
  assert_int_equal(hb_tls_read(p.s, b, sizeof b), 0);
  assert_int_equal(hb_tls_read(p.s, b, sizeof b), 0);
  assert_string_equal(hb_tls_error(p.s), "");
  pair_free(&p);
}

/* The socket closes without close_notify. */
static void test_eof(void **state)
{
  struct pair p;
  char b[16];

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "alpha", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_int_equal(p.rc_s, 0);
  hb_tls_feed_eof(p.s);
  assert_fails(p.s, (int) hb_tls_read(p.s, b, sizeof b), -ECONNRESET,
               "peer closed the connection without close_notify");
  pair_free(&p);

  p.c = chan_own(ctx_certs("ca", "alpha", "bravo"), HB_TLS_CLIENT);
  assert_int_equal(hb_tls_handshake(p.c), -EAGAIN);
  hb_tls_feed_eof(p.c);
  assert_fails(p.c, hb_tls_handshake(p.c), -ECONNRESET,
               "peer closed the connection during the TLS handshake");
  hb_tls_free(p.c);

  /* A PSK server whose client hangs up before its ClientHello. */
  p.s = chan_own(ctx_psk("psk.hex", NULL), HB_TLS_SERVER);
  assert_int_equal(hb_tls_handshake(p.s), -EAGAIN);
  hb_tls_feed_eof(p.s);
  assert_fails(p.s, hb_tls_handshake(p.s), -ECONNRESET,
               "peer closed the connection during the TLS handshake");
  hb_tls_free(p.s);
}

/* ---- refusals ----------------------------------------------------------- */

static void test_client_unknown_ca(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "alpha-other", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_fails(p.s, p.rc_s, -EACCES,
               "peer certificate (alpha) is signed by an unknown CA "
               "(issuer CN=other-test-ca)");
  assert_fails(p.c, p.rc_c, -EACCES,
               "peer rejected our certificate: unknown CA");
  pair_free(&p);
}

static void test_server_unknown_ca(void **state)
{
  struct pair p;

  NEED_CERTS();
  /* The client trusts only the other CA. */
  p = connect_ctx(ctx_certs("other-ca", "alpha", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_fails(p.c, p.rc_c, -EACCES,
               "peer certificate (bravo) is signed by an unknown CA");
  assert_fails(p.s, p.rc_s, -EACCES,
               "peer rejected our certificate: unknown CA");
  pair_free(&p);
}

static void test_client_expired(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "alpha-expired", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_fails(p.s, p.rc_s, -EACCES,
               "peer certificate expired (alpha, notAfter Jan  2 00:00:00 "
               "2020 GMT)");
  assert_fails(p.c, p.rc_c, -EACCES,
               "peer rejected our certificate: expired");
  pair_free(&p);
}

static void test_server_expired(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "bravo", "alpha"),
                  ctx_certs("ca", "alpha-expired", "bravo"));
  assert_fails(p.c, p.rc_c, -EACCES, "peer certificate expired");
  assert_fails(p.s, p.rc_s, -EACCES,
               "peer rejected our certificate: expired");
  pair_free(&p);
}

static void test_client_wrong_name(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_certs("ca", "charlie", "bravo"),
                  ctx_certs("ca", "bravo", "alpha"));
  assert_fails(p.s, p.rc_s, -EACCES,
               "peer certificate names charlie, expected alpha");
  assert_fails(p.c, p.rc_c, -EACCES, "peer rejected our certificate");
  pair_free(&p);
}

static void test_server_wrong_name(void **state)
{
  struct pair p;

  NEED_CERTS();
  /* The client expects bravo; the server is alpha. */
  p = connect_ctx(ctx_certs("ca", "alpha", "bravo"),
                  ctx_certs("ca", "alpha", "alpha"));
  assert_fails(p.c, p.rc_c, -EACCES,
               "peer certificate names alpha, expected bravo");
  assert_fails(p.s, p.rc_s, -EACCES, "peer rejected our certificate");
  pair_free(&p);
}

/* A plain OpenSSL client over its own BIO pair: no certificate, or an old
 * protocol version. */
struct raw_client {
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *net;
};

static void raw_client_new(struct raw_client *r, int max_version)
{
  BIO *inner;

  r->ctx = SSL_CTX_new(TLS_client_method());
  assert_non_null(r->ctx);
  if (max_version)
    assert_int_equal(SSL_CTX_set_max_proto_version(r->ctx, max_version), 1);
  SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
  r->ssl = SSL_new(r->ctx);
  assert_non_null(r->ssl);
  assert_int_equal(BIO_new_bio_pair(&inner, 1 << 16, &r->net, 1 << 16), 1);
  SSL_set_bio(r->ssl, inner, inner);
  SSL_set_connect_state(r->ssl);
}

static void raw_client_free(struct raw_client *r)
{
  SSL_free(r->ssl);
  BIO_free(r->net);
  SSL_CTX_free(r->ctx);
  ERR_clear_error();
}

/* Run the raw client against a server channel; returns the server's rc. */
static int raw_run(struct raw_client *r, struct hb_tls *s)
{
  char buf[4096];
  int i, rc = -EAGAIN;

  for (i = 0; i < 50 && rc == -EAGAIN; i++) {
    const void *p;
    size_t n;
    int k;

    SSL_do_handshake(r->ssl);
    if (SSL_is_init_finished(r->ssl))
      SSL_write(r->ssl, "x", 1);
    while ((k = BIO_read(r->net, buf, sizeof buf)) > 0)
      assert_int_equal(hb_tls_feed(s, buf, (size_t) k), (size_t) k);
    rc = hb_tls_handshake(s);
    if (rc == 0)
      rc = (int) hb_tls_read(s, buf, sizeof buf);
    while ((n = hb_tls_pending_out(s, &p)) > 0) {
      k = BIO_write(r->net, p, (int) n);
      assert_true(k > 0);
      hb_tls_consume_out(s, (size_t) k);
    }
  }
  ERR_clear_error();
  return rc;
}

static void test_no_client_cert(void **state)
{
  struct raw_client r;
  struct hb_tls *s;

  NEED_CERTS();
  raw_client_new(&r, 0);
  s = chan_own(ctx_certs("ca", "bravo", "alpha"), HB_TLS_SERVER);
  assert_fails(s, raw_run(&r, s), -EACCES, "peer sent no certificate");
  raw_client_free(&r);
  hb_tls_free(s);
}

static void test_tls12_client(void **state)
{
  struct raw_client r;
  struct hb_tls *s;

  NEED_CERTS();
  raw_client_new(&r, TLS1_2_VERSION);
  s = chan_own(ctx_certs("ca", "bravo", "alpha"), HB_TLS_SERVER);
  assert_fails(s, raw_run(&r, s), -EPROTO, "peer does not speak TLS 1.3");
  raw_client_free(&r);
  hb_tls_free(s);
}

static void test_plaintext(void **state)
{
  static const char *const lines[] = {
    "HELLO hablock\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "x",
  };
  static const char *const want[] = {
    "not TLS (plaintext?): peer sent \"HELLO ha\"",
    "not TLS (plaintext?): peer sent \"GET / HT\"",
    "not TLS (plaintext?): peer sent \"x\"",
  };
  struct hb_tls_ctx *sc;
  size_t i;

  NEED_CERTS();
  sc = ctx_certs("ca", "bravo", "alpha");
  for (i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    struct hb_tls *s = chan(sc, HB_TLS_SERVER);
    char b[8];

    assert_int_equal(hb_tls_handshake(s), -EAGAIN);
    hb_tls_feed(s, lines[i], strlen(lines[i]));
    assert_fails(s, hb_tls_handshake(s), -EPROTO, want[i]);
    assert_int_equal(hb_tls_read(s, b, sizeof b), -EPROTO);
    hb_tls_free(s);
  }

  /* A client that gets plaintext back (a binary protocol, say). */
  {
    struct hb_tls *c = chan_own(ctx_certs("ca", "alpha", "bravo"),
                                HB_TLS_CLIENT);
    const void *p;

    assert_int_equal(hb_tls_handshake(c), -EAGAIN);
    assert_true(hb_tls_pending_out(c, &p) > 0);
    hb_tls_feed(c, "\x00\x01\x02\xff", 4);
    assert_fails(c, hb_tls_handshake(c), -EPROTO,
                 "not TLS (plaintext?): first bytes 00 01 02 ff");
    hb_tls_free(c);
  }
  hb_tls_ctx_free(sc);
}

/* ---- mini fuzz ---------------------------------------------------------- */

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545f4914f6cdd1dull;
}

static void fill_random(unsigned char *b, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    b[i] = (unsigned char) rnd();
}

/* After feeding junk: still waiting, or failed with one line. */
static void assert_sane(struct hb_tls *t, int rc)
{
  if (rc == -EAGAIN || rc == 0)
    return;
  if (getenv("HB_TLS_TEST_VERBOSE"))
    fprintf(stderr, "# junk: %s\n", hb_tls_error(t));
  assert_true(rc == -EPROTO || rc == -EACCES || rc == -ECONNRESET);
  assert_true(hb_tls_error(t)[0] != '\0');
  assert_null(strchr(hb_tls_error(t), '\n'));
  assert_false(hb_tls_established(t));
}

static void test_random_bytes(void **state)
{
  struct hb_tls_ctx *sc, *cc;
  unsigned char junk[8192];
  unsigned i, failed = 0;

  NEED_CERTS();
  sc = ctx_certs("ca", "bravo", "alpha");
  cc = ctx_certs("ca", "alpha", "bravo");
  for (i = 0; i < 300; i++) {
    struct hb_tls *t = chan(i % 2 ? cc : sc,
                            i % 2 ? HB_TLS_CLIENT : HB_TLS_SERVER);
    size_t n = 1 + rnd() % sizeof junk;
    int rc;

    fill_random(junk, n);
    if (i % 4 < 2) {
      /* Make some of it look like a TLS record header. */
      junk[0] = 0x16;
      if (n > 1)
        junk[1] = 0x03;
      if (n > 2)
        junk[2] = (unsigned char) (rnd() % 5);
    }
    hb_tls_handshake(t);
    hb_tls_feed(t, junk, n);
    rc = hb_tls_handshake(t);
    assert_sane(t, rc);
    failed += rc != -EAGAIN;
    hb_tls_free(t);
  }
  assert_true(failed > 200);
  hb_tls_ctx_free(sc);
  hb_tls_ctx_free(cc);
}

/* A real ClientHello with bits flipped, fed to a server; and an
 * established link fed junk records. */
static void test_mutated_hello(void **state)
{
  struct hb_tls_ctx *sc, *cc;
  unsigned char hello[4096];
  const void *p;
  size_t n;
  unsigned i, k;
  struct pair pr;
  char b[64];

  NEED_CERTS();
  sc = ctx_certs("ca", "bravo", "alpha");
  cc = ctx_certs("ca", "alpha", "bravo");
  {
    struct hb_tls *c = chan(cc, HB_TLS_CLIENT);

    assert_int_equal(hb_tls_handshake(c), -EAGAIN);
    n = hb_tls_pending_out(c, &p);
    assert_true(n > 0 && n <= sizeof hello);
    memcpy(hello, p, n);
    hb_tls_free(c);
  }
  for (i = 0; i < 500; i++) {
    unsigned char m[4096];
    struct hb_tls *s = chan(sc, HB_TLS_SERVER);

    memcpy(m, hello, n);
    for (k = 0; k < 1 + rnd() % 4; k++) {
      size_t bit = rnd() % (n * 8);

      m[bit / 8] ^= (unsigned char) (1u << (bit % 8));
    }
    hb_tls_feed(s, m, n);
    assert_sane(s, hb_tls_handshake(s));
    hb_tls_free(s);
  }

  for (i = 0; i < 50; i++) {
    int rc;

    pr = connect_ctx(ctx_certs("ca", "alpha", "bravo"),
                     ctx_certs("ca", "bravo", "alpha"));
    assert_int_equal(pr.rc_s, 0);
    n = 5 + rnd() % 2000;
    fill_random(hello, n);
    hello[0] = 0x17;  /* application data */
    hello[1] = 0x03;
    hello[2] = 0x03;
    hello[3] = (unsigned char) ((n - 5) >> 8);
    hello[4] = (unsigned char) (n - 5);
    hb_tls_feed(pr.s, hello, n);
    rc = (int) hb_tls_read(pr.s, b, sizeof b);
    assert_int_equal(rc, -EPROTO);
    assert_sane(pr.s, rc);
    pair_free(&pr);
  }
  hb_tls_ctx_free(sc);
  hb_tls_ctx_free(cc);
}

/* ---- PSK ---------------------------------------------------------------- */

/* Extension types in the ServerHello: pre_shared_key and key_share. */
static void server_hello_exts(const unsigned char *b, size_t n, bool *psk,
                              bool *key_share)
{
  size_t off, end, sid;

  *psk = *key_share = false;
  /* record(5) handshake(4) version(2) random(32) */
  assert_true(n > 5 + 4 + 2 + 32 + 1);
  assert_int_equal(b[0], 0x16);
  assert_int_equal(b[5], 2);  /* ServerHello */
  off = 5 + 4 + 2 + 32;
  sid = b[off];
  off += 1 + sid + 2 + 1;     /* session id, cipher, compression */
  assert_true(off + 2 <= n);
  end = off + 2 + ((size_t) b[off] << 8 | b[off + 1]);
  off += 2;
  assert_true(end <= n);
  while (off + 4 <= end) {
    unsigned type = (unsigned) b[off] << 8 | b[off + 1];
    size_t len = (size_t) b[off + 2] << 8 | b[off + 3];

    if (type == 0x0029)
      *psk = true;
    if (type == 0x0033)
      *key_share = true;
    off += 4 + len;
  }
}

static void test_psk_ok(void **state)
{
  struct pair p;
  unsigned char sh[2048];
  const void *out;
  bool psk, ks;
  size_t n;

  NEED_CERTS();
  p.c = chan_own(ctx_psk("psk.hex", NULL), HB_TLS_CLIENT);
  p.s = chan_own(ctx_psk("psk.hex", NULL), HB_TLS_SERVER);
  /* Look at the ServerHello: a PSK and an ECDHE key share (psk_dhe_ke). */
  assert_int_equal(hb_tls_handshake(p.c), -EAGAIN);
  pump(p.c, p.s);
  if (hb_tls_handshake(p.s) != -EAGAIN)
    fail_msg("server: %s", hb_tls_error(p.s));
  n = hb_tls_pending_out(p.s, &out);
  assert_true(n > 0);
  memcpy(sh, out, n < sizeof sh ? n : sizeof sh);
  server_hello_exts(sh, n < sizeof sh ? n : sizeof sh, &psk, &ks);
  assert_true(psk);
  assert_true(ks);
  run(&p);
  if (p.rc_c || p.rc_s)
    fail_msg("client %d \"%s\", server %d \"%s\"", p.rc_c,
             hb_tls_error(p.c), p.rc_s, hb_tls_error(p.s));
  assert_string_equal(hb_tls_version(p.c), "TLSv1.3");
  assert_string_equal(hb_tls_cipher(p.c), "TLS_AES_128_GCM_SHA256");
  assert_string_equal(hb_tls_peer(p.c), "psk:hablock");
  assert_string_equal(hb_tls_peer(p.s), "psk:hablock");
  transfer(p.c, p.s, 200000, 5);
  transfer(p.s, p.c, 200000, 6);
  pair_free(&p);
}

static void test_psk_mismatch(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_psk("psk.hex", NULL), ctx_psk("psk-other.hex", NULL));
  assert_fails(p.s, p.rc_s, -EACCES,
               "PSK mismatch: peer's PSK differs from ours");
  assert_fails(p.c, p.rc_c, -EACCES,
               "peer rejected our PSK (PSK mismatch?)");
  pair_free(&p);
}

static void test_psk_identity(void **state)
{
  struct pair p;

  NEED_CERTS();
  p = connect_ctx(ctx_psk("psk.hex", "r0"), ctx_psk("psk.hex", "r1"));
  assert_fails(p.s, p.rc_s, -EACCES, "peer offered unknown PSK identity 'r0'");
  assert_refused(p.c, p.rc_c);
  pair_free(&p);
}

static void test_psk_vs_certs(void **state)
{
  struct pair p;

  NEED_CERTS();
  /* PSK client, certificate server: the client refuses a certificate. */
  p = connect_ctx(ctx_psk("psk.hex", NULL), ctx_certs("ca", "bravo", "alpha"));
  assert_fails(p.c, p.rc_c, -EACCES,
               "peer sent a certificate (bravo) but we use a PSK");
  assert_refused(p.s, p.rc_s);
  pair_free(&p);

  /* Certificate client, PSK server. */
  p = connect_ctx(ctx_certs("ca", "alpha", "bravo"), ctx_psk("psk.hex", NULL));
  assert_fails(p.s, p.rc_s, -EACCES, "peer offered no PSK");
  assert_refused(p.c, p.rc_c);
  pair_free(&p);
}

/* ---- configuration errors ----------------------------------------------- */

static int ctx_err(const struct hb_tls_config *cfg, char *err, size_t len)
{
  struct hb_tls_ctx *c = NULL;
  int rc;

  err[0] = '\0';
  rc = hb_tls_ctx_new(cfg, &c, err, len);
  assert_null(c);
  assert_true(rc < 0);
  assert_null(strchr(err, '\n'));
  return rc;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
  FILE *f = fopen(path, "w");

  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  assert_int_equal(chmod(path, mode), 0);
}

static void test_ctx_errors(void **state)
{
  struct hb_tls_config cfg;
  char err[256];

  NEED_CERTS();
  cfg = (struct hb_tls_config) { .ca_file = "/nonexistent/ca.crt",
    .cert_file = P("alpha.crt"), .key_file = P("alpha.key"),
    .peer_name = "bravo" };
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -ENOENT);
  assert_string_equal(err, "cannot read CA file /nonexistent/ca.crt: "
                      "No such file or directory");

  cfg.ca_file = P("ca.crt");
  cfg.key_file = P("bravo.key");
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -EINVAL);
  assert_true(strstr(err, "alpha.crt does not match key") != NULL);

  cfg.key_file = P("alpha.key");
  cfg.peer_name = NULL;
  ctx_err(&cfg, err, sizeof err);
  assert_string_equal(err, "no peer name configured");

  write_file(P("junk.crt"), "not a certificate\n", 0644);
  cfg.peer_name = "bravo";
  cfg.cert_file = P("junk.crt");
  ctx_err(&cfg, err, sizeof err);
  assert_true(strstr(err, "cannot load certificate file") != NULL);
  cfg.cert_file = P("alpha.crt");
  cfg.ca_file = P("junk.crt");
  ctx_err(&cfg, err, sizeof err);
  assert_true(strstr(err, "cannot load CA file") != NULL);

  cfg.ca_file = P("ca.crt");
  cfg.psk_file = P("psk.hex");
  ctx_err(&cfg, err, sizeof err);
  assert_string_equal(err, "choose a PSK or certificates, not both");

  cfg = (struct hb_tls_config) { .psk_file = P("psk-open.hex") };
  write_file(P("psk-open.hex"), "00112233445566778899aabbccddeeff\n", 0644);
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -EACCES);
  assert_true(strstr(err, "is accessible by others (mode 0644)") != NULL);

  cfg.psk_file = P("psk-short.hex");
  write_file(cfg.psk_file, "00112233\n", 0600);
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -EINVAL);
  assert_true(strstr(err, "holds 4 bytes; need at least 16") != NULL);

  cfg.psk_file = P("psk-bad.hex");
  write_file(cfg.psk_file, "0011223344556677 8899aabbccddeeffzz\n", 0600);
  ctx_err(&cfg, err, sizeof err);
  assert_true(strstr(err, "byte 33 is not a hex digit") != NULL);

  cfg.psk_file = P("psk-odd.hex");
  write_file(cfg.psk_file, "00112233445566778899aabbccddeeff0\n", 0600);
  ctx_err(&cfg, err, sizeof err);
  assert_true(strstr(err, "odd number of hex digits") != NULL);

  cfg.psk_file = P("nope.hex");
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -ENOENT);
  assert_true(strstr(err, "cannot read PSK file") != NULL);

  /* Cipher suites: checked by name, and against a PSK's hash. */
  cfg.psk_file = P("psk.hex");
  cfg.ciphersuites = "TLS_AES_256_GCM_SHA384";
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -EINVAL);
  assert_string_equal(err, "cipher suite TLS_AES_256_GCM_SHA384 cannot be "
                      "used with a PSK (its hash is not SHA-256)");
  cfg = (struct hb_tls_config) { .ca_file = P("ca.crt"),
    .cert_file = P("alpha.crt"), .key_file = P("alpha.key"),
    .peer_name = "bravo", .ciphersuites = "TLS_AES_128_GCM_SHA256:AES128-SHA" };
  assert_int_equal(ctx_err(&cfg, err, sizeof err), -EINVAL);
  assert_true(strstr(err, "unknown TLS 1.3 cipher suite 'AES128-SHA' (known: ") == err);
  cfg.ciphersuites = "TLS_AES_128_GCM_SHA256::TLS_AES_256_GCM_SHA384";
  ctx_err(&cfg, err, sizeof err);
  assert_string_equal(err, "empty cipher suite name in "
                      "'TLS_AES_128_GCM_SHA256::TLS_AES_256_GCM_SHA384'");
  cfg.ciphersuites = "";
  ctx_err(&cfg, err, sizeof err);
  assert_string_equal(err, "no cipher suite named");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_handshake_ok),
    cmocka_unit_test(test_suites),
    cmocka_unit_test(test_cn_only),
    cmocka_unit_test(test_data),
    cmocka_unit_test(test_close),
    cmocka_unit_test(test_eof),
    cmocka_unit_test(test_client_unknown_ca),
    cmocka_unit_test(test_server_unknown_ca),
    cmocka_unit_test(test_client_expired),
    cmocka_unit_test(test_server_expired),
    cmocka_unit_test(test_client_wrong_name),
    cmocka_unit_test(test_server_wrong_name),
    cmocka_unit_test(test_no_client_cert),
    cmocka_unit_test(test_tls12_client),
    cmocka_unit_test(test_plaintext),
    cmocka_unit_test(test_random_bytes),
    cmocka_unit_test(test_mutated_hello),
    cmocka_unit_test(test_psk_ok),
    cmocka_unit_test(test_psk_mismatch),
    cmocka_unit_test(test_psk_identity),
    cmocka_unit_test(test_psk_vs_certs),
    cmocka_unit_test(test_ctx_errors),
  };

  return cmocka_run_group_tests_name("tls", tests, group_setup,
                                     group_teardown);
}
