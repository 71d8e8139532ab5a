/* The peer link's TLS 1.3 channel over an OpenSSL BIO pair. See tls.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls.h"

#define ERRLEN 256
#define NAMES_LEN 160
#define PSK_ID_MAX 128

struct hb_tls_ctx {
  SSL_CTX *ssl_ctx;
  int refs;                         /* atomic */
  bool psk;
  unsigned char psk_key[HB_TLS_PSK_MAX];
  size_t psk_len;
  char psk_id[PSK_ID_MAX + 1];
  char peer_name[256];
};

struct hb_tls {
  struct hb_tls_ctx *ctx;
  SSL *ssl;
  BIO *net;                          /* our end of the pair */
  enum hb_tls_side side;
  bool established;
  bool peer_closed;                  /* close_notify received */
  int failed;                        /* sticky -errno */
  char err[ERRLEN];

  /* What the first ciphertext bytes looked like (for "not TLS"). */
  unsigned char sniff[8];
  size_t sniff_len;
  bool sniff_done;
  bool not_tls;

  /* Filled by the verify callback: the peer certificate's names and the
   * first verification failure. */
  char peer_names[NAMES_LEN];
  int verify_err;
  int verify_depth;
  char verify_detail[NAMES_LEN];     /* notAfter, issuer, ... */

  /* PSK server: what the client offered. */
  bool psk_offered;
  bool psk_unknown;
  char psk_offered_id[64];

  char *in_ptr;                      /* last hb_tls_in_space() region */
  char version[16];
  char cipher[64];
  char peer[NAMES_LEN];
};

/* ---- small helpers ------------------------------------------------------ */

/* Copy untrusted bytes into a printable one-line string. */
static void printable(char *dst, size_t dstlen, const unsigned char *src,
                      size_t n)
{
  size_t i, o = 0;

  if (dstlen == 0)
    return;
  for (i = 0; i < n && o + 1 < dstlen; i++)
    dst[o++] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char) src[i] : '?';
  dst[o] = '\0';
}

static void append(char *dst, size_t dstlen, const char *s)
{
  size_t n = strlen(dst);

  if (n < dstlen)
    snprintf(dst + n, dstlen - n, "%s", s);
}

static void ssl_errors_to(char *buf, size_t len)
{
  unsigned long e = ERR_peek_last_error();
  const char *reason;

  if (e == 0) {
    snprintf(buf, len, "unknown error");
    return;
  }
  reason = ERR_reason_error_string(e);
  if (reason)
    snprintf(buf, len, "%s", reason);
  else
    ERR_error_string_n(e, buf, len);
}

static int fail(struct hb_tls *t, int err, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* Make the channel's failure final: the code, and one line. */
static int fail(struct hb_tls *t, int err, const char *fmt, ...)
{
  va_list ap;
  char *nl;

  va_start(ap, fmt);
  vsnprintf(t->err, sizeof t->err, fmt, ap);
  va_end(ap);
  while ((nl = strchr(t->err, '\n')) != NULL)
    *nl = ' ';
  t->failed = -err;
  ERR_clear_error();
  return t->failed;
}

/* ---- certificates ------------------------------------------------------- */

/* "alpha,alpha.example" from the SAN DNS entries, else the CN. */
static void cert_names(X509 *cert, char *buf, size_t len)
{
  GENERAL_NAMES *sans;
  X509_NAME *subj;
  int i, n;

  buf[0] = '\0';
  sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  if (sans) {
    n = sk_GENERAL_NAME_num(sans);
    for (i = 0; i < n; i++) {
      const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
      char one[72];

      if (g->type != GEN_DNS)
        continue;
      printable(one, sizeof one, ASN1_STRING_get0_data(g->d.dNSName),
                (size_t) ASN1_STRING_length(g->d.dNSName));
      if (buf[0])
        append(buf, len, ",");
      append(buf, len, one);
    }
    GENERAL_NAMES_free(sans);
  }
  if (buf[0])
    return;

  subj = X509_get_subject_name(cert);
  i = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
  if (i >= 0) {
    ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));

    printable(buf, len, ASN1_STRING_get0_data(cn),
              (size_t) ASN1_STRING_length(cn));
  }
  if (!buf[0])
    snprintf(buf, len, "no name");
}

static void bio_to_line(BIO *b, char *buf, size_t len)
{
  char *data;
  long n = BIO_get_mem_data(b, &data);

  printable(buf, len, (const unsigned char *) data, n > 0 ? (size_t) n : 0);
}

static void cert_not_after(X509 *cert, char *buf, size_t len)
{
  BIO *b = BIO_new(BIO_s_mem());

  buf[0] = '\0';
  if (!b)
    return;
  if (ASN1_TIME_print(b, X509_get0_notAfter(cert)))
    bio_to_line(b, buf, len);
  BIO_free(b);
}

static void cert_issuer(X509 *cert, char *buf, size_t len)
{
  BIO *b = BIO_new(BIO_s_mem());

  buf[0] = '\0';
  if (!b)
    return;
  if (X509_NAME_print_ex(b, X509_get_issuer_name(cert), 0,
                         XN_FLAG_RFC2253) >= 0)
    bio_to_line(b, buf, len);
  BIO_free(b);
}

/* Record what the peer presented and why it failed; the verdict stays
 * OpenSSL's. In PSK mode any certificate is refused. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs,
                                        SSL_get_ex_data_X509_STORE_CTX_idx());
  struct hb_tls *t = ssl ? SSL_get_app_data(ssl) : NULL;
  X509 *leaf, *cur;

  if (!t)
    return ok;
  leaf = X509_STORE_CTX_get0_cert(xs);
  if (!t->peer_names[0] && leaf)
    cert_names(leaf, t->peer_names, sizeof t->peer_names);
  if (t->ctx->psk) {
    /* Tell the peer "handshake failure" rather than "unknown CA". */
    t->verify_err = X509_V_ERR_APPLICATION_VERIFICATION;
    X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  if (ok || t->verify_err)
    return ok;

  t->verify_err = X509_STORE_CTX_get_error(xs);
  t->verify_depth = X509_STORE_CTX_get_error_depth(xs);
  cur = X509_STORE_CTX_get_current_cert(xs);
  if (!cur)
    return ok;
  switch (t->verify_err) {
  case X509_V_ERR_CERT_HAS_EXPIRED:
  case X509_V_ERR_CERT_NOT_YET_VALID:
    cert_not_after(cur, t->verify_detail, sizeof t->verify_detail);
    break;
  default:
    cert_issuer(cur, t->verify_detail, sizeof t->verify_detail);
    break;
  }
  return ok;
}

/* The line for a failed verification of the peer's certificate. */
static int fail_verify(struct hb_tls *t)
{
  const char *who = t->verify_depth > 0 ? "peer's CA certificate"
                                        : "peer certificate";

  if (t->ctx->psk)
    return fail(t, EACCES, "peer sent a certificate (%s) but we use a PSK",
                t->peer_names);
  switch (t->verify_err) {
  case X509_V_ERR_CERT_HAS_EXPIRED:
    return fail(t, EACCES, "%s expired (%s, notAfter %s)", who,
                t->peer_names, t->verify_detail);
  case X509_V_ERR_CERT_NOT_YET_VALID:
    return fail(t, EACCES, "%s is not yet valid (%s)", who, t->peer_names);
  case X509_V_ERR_HOSTNAME_MISMATCH:
    return fail(t, EACCES, "peer certificate names %s, expected %s",
                t->peer_names, t->ctx->peer_name);
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    return fail(t, EACCES,
                "peer certificate (%s) is signed by an unknown CA "
                "(issuer %s)", t->peer_names, t->verify_detail);
  default:
    return fail(t, EACCES, "peer certificate (%s) rejected: %s",
                t->peer_names,
                X509_verify_cert_error_string(t->verify_err));
  }
}

/* ---- error mapping ------------------------------------------------------ */

struct reason_line {
  int reason;
  int err;
  const char *msg;
};

/* OpenSSL reasons worth their own words. Alerts from the peer say why the
 * peer refused us. */
static const struct reason_line reasons[] = {
  { SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE, EACCES,
    "peer sent no certificate" },
  { SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED, EACCES,
    "peer requires a certificate and we sent none" },
  { SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED, EACCES,
    "peer rejected our certificate: expired" },
  { SSL_R_TLSV1_ALERT_UNKNOWN_CA, EACCES,
    "peer rejected our certificate: unknown CA" },
  { SSL_R_SSLV3_ALERT_BAD_CERTIFICATE, EACCES,
    "peer rejected our certificate (wrong node name?)" },
  { SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN, EACCES,
    "peer rejected our certificate (wrong node name?)" },
  { SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED, EACCES,
    "peer rejected our certificate: revoked" },
  { SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE, EACCES,
    "peer rejected our certificate: unsupported" },
  { SSL_R_BINDER_DOES_NOT_VERIFY, EACCES,
    "PSK mismatch: peer's PSK differs from ours" },
  { SSL_R_TLSV1_ALERT_DECRYPT_ERROR, EACCES,
    "peer could not verify our handshake (PSK mismatch?)" },
  { SSL_R_TLSV1_ALERT_UNKNOWN_PSK_IDENTITY, EACCES,
    "peer does not know our PSK identity" },
  { SSL_R_UNSUPPORTED_PROTOCOL, EPROTO,
    "peer does not speak TLS 1.3" },
  { SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, EPROTO,
    "peer refused TLS 1.3" },
  { SSL_R_NO_SHARED_CIPHER, EPROTO,
    "no shared cipher (ciphersuites differ, or PSK on one node and"
    " certificates on the other?)" },
  { SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE, EACCES,
    "peer refused the handshake (does it use a PSK?)" },
  { SSL_R_UNEXPECTED_EOF_WHILE_READING, ECONNRESET,
    "peer closed the connection without close_notify" },
  { SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC, EPROTO,
    "TLS record failed authentication (corrupted or forged data)" },
};

/* Reasons that mean the bytes are not TLS records at all. */
static bool reason_not_tls(int reason)
{
  switch (reason) {
  case SSL_R_WRONG_VERSION_NUMBER:
  case SSL_R_HTTP_REQUEST:
  case SSL_R_HTTPS_PROXY_REQUEST:
  case SSL_R_UNKNOWN_PROTOCOL:
  case SSL_R_PACKET_LENGTH_TOO_LONG:
  case SSL_R_WRONG_SSL_VERSION:
    return true;
  default:
    return false;
  }
}

static int fail_not_tls(struct hb_tls *t)
{
  char hex[3 * sizeof t->sniff + 1] = "";
  char text[sizeof t->sniff + 1];
  bool all_print = t->sniff_len > 0;
  size_t i;

  for (i = 0; i < t->sniff_len; i++) {
    snprintf(hex + strlen(hex), sizeof hex - strlen(hex), "%s%02x",
             i ? " " : "", t->sniff[i]);
    if (t->sniff[i] < 0x20 || t->sniff[i] >= 0x7f)
      all_print = false;
  }
  if (all_print) {
    printable(text, sizeof text, t->sniff, t->sniff_len);
    return fail(t, EPROTO, "not TLS (plaintext?): peer sent \"%s\"", text);
  }
  return fail(t, EPROTO, "not TLS (plaintext?): first bytes %s", hex);
}

/* Turn a failed SSL call into the channel's failure, or -EAGAIN. */
static int ssl_fail(struct hb_tls *t, int ret)
{
  int e = SSL_get_error(t->ssl, ret);
  unsigned long code, first = 0;
  char why[160];

  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return -EAGAIN;
  }
  if (t->not_tls)
    return fail_not_tls(t);
  if (t->verify_err)
    return fail_verify(t);
  if (t->psk_unknown)
    return fail(t, EACCES, "peer offered unknown PSK identity '%s'",
                t->psk_offered_id);
  if (t->ctx->psk && t->side == HB_TLS_SERVER && !t->psk_offered &&
      !t->established && e == SSL_ERROR_SSL &&
      ERR_GET_REASON(ERR_peek_last_error()) !=
      SSL_R_UNEXPECTED_EOF_WHILE_READING)
    return fail(t, EACCES,
                "peer offered no PSK (certificates on the peer?)");

  while ((code = ERR_get_error()) != 0) {
    int reason = ERR_GET_REASON(code);
    size_t i;

    if (!first)
      first = code;
    if (ERR_GET_LIB(code) != ERR_LIB_SSL)
      continue;
    if (t->ctx->psk && !t->established &&
        (reason == SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER ||
         reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR))
      return fail(t, EACCES, "peer rejected our PSK (PSK mismatch?)");
    if (t->ctx->psk && !t->established &&
        reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)
      return fail(t, EACCES, "peer refused the handshake (other PSK "
                  "identity, or certificates on the peer?)");
    if (reason_not_tls(reason) && !t->established) {
      t->not_tls = true;
      return fail_not_tls(t);
    }
    for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
      if (reasons[i].reason == reason) {
        if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING && !t->established)
          return fail(t, ECONNRESET,
                      "peer closed the connection during the TLS "
                      "handshake");
        return fail(t, reasons[i].err, "%s", reasons[i].msg);
      }
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      long v = SSL_get_verify_result(t->ssl);

      return fail(t, EACCES, "peer certificate rejected: %s",
                  X509_verify_cert_error_string(v));
    }
  }

  if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
    return fail(t, ECONNRESET, "peer closed the connection%s",
                t->established ? "" : " during the TLS handshake");
  if (!first)
    return fail(t, EPROTO, "TLS error %d without a reason", e);
  if (ERR_reason_error_string(first))
    snprintf(why, sizeof why, "%s", ERR_reason_error_string(first));
  else
    ERR_error_string_n(first, why, sizeof why);
  return fail(t, EPROTO, "TLS error: %s", why);
}

/* ---- context ------------------------------------------------------------ */

static int readable(const char *what, const char *path, char *err,
                    size_t errlen)
{
  if (!path || !*path)
    return hb_fail(err, errlen, EINVAL, "no %s file configured", what);
  if (access(path, R_OK) < 0)
    return hb_fail(err, errlen, errno, "cannot read %s file %s: %s", what,
                   path, strerror(errno));
  return 0;
}

static int ctx_fail(char *err, size_t errlen, int e, const char *what,
                    const char *path)
{
  char why[160];

  ssl_errors_to(why, sizeof why);
  ERR_clear_error();
  return hb_fail(err, errlen, e, "cannot load %s file %s: %s", what, path,
                 why);
}

static int hexval(int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Read the PSK: hex digits, whitespace ignored. */
static int load_psk(struct hb_tls_ctx *c, const char *path, char *err,
                    size_t errlen)
{
  unsigned char text[4 * HB_TLS_PSK_MAX + 64];
  struct stat st;
  size_t ndig = 0, i;
  ssize_t n;
  int fd, hi = -1, rc = 0;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return hb_fail(err, errlen, errno, "cannot read PSK file %s: %s", path,
                   strerror(errno));
  if (fstat(fd, &st) < 0) {
    rc = hb_fail(err, errlen, errno, "cannot stat PSK file %s: %s", path,
                 strerror(errno));
    goto out;
  }
  if (st.st_mode & (S_IROTH | S_IWOTH)) {
    rc = hb_fail(err, errlen, EACCES,
                 "PSK file %s is accessible by others (mode %04o); "
                 "chmod o-rwx it", path, (unsigned) (st.st_mode & 07777));
    goto out;
  }
  n = read(fd, text, sizeof text);
  if (n < 0) {
    rc = hb_fail(err, errlen, errno, "cannot read PSK file %s: %s", path,
                 strerror(errno));
    goto out;
  }
  if ((size_t) n == sizeof text) {
    rc = hb_fail(err, errlen, EINVAL, "PSK file %s is too long", path);
    goto out;
  }
  for (i = 0; i < (size_t) n; i++) {
    int v = hexval(text[i]);

    if (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' ||
        text[i] == '\r')
      continue;
    if (v < 0) {
      rc = hb_fail(err, errlen, EINVAL,
                   "PSK file %s: byte %zu is not a hex digit", path, i);
      goto out;
    }
    if (ndig / 2 >= HB_TLS_PSK_MAX) {
      rc = hb_fail(err, errlen, EINVAL,
                   "PSK file %s holds more than %u bytes", path,
                   HB_TLS_PSK_MAX);
      goto out;
    }
    if (hi < 0)
      hi = v;
    else {
      c->psk_key[ndig / 2] = (unsigned char) (hi << 4 | v);
      hi = -1;
    }
    ndig++;
  }
  if (ndig % 2) {
    rc = hb_fail(err, errlen, EINVAL,
                 "PSK file %s has an odd number of hex digits", path);
    goto out;
  }
  c->psk_len = ndig / 2;
  if (c->psk_len < HB_TLS_PSK_MIN)
    rc = hb_fail(err, errlen, EINVAL,
                 "PSK file %s holds %zu bytes; need at least %u "
                 "(%u hex digits)", path, c->psk_len, HB_TLS_PSK_MIN,
                 2 * HB_TLS_PSK_MIN);
out:
  OPENSSL_cleanse(text, sizeof text);
  close(fd);
  return rc;
}

/* The PSK as a TLS 1.3 session whose cipher fixes the handshake digest
 * (SHA-256; the context offers only SHA-256 suites in PSK mode). */
static SSL_SESSION *psk_session(SSL *ssl, const struct hb_tls_ctx *c)
{
  static const unsigned char aes128gcm_sha256[] = { 0x13, 0x01 };
  const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcm_sha256);
  SSL_SESSION *s;

  if (!cipher)
    return NULL;
  s = SSL_SESSION_new();
  if (!s)
    return NULL;
  if (!SSL_SESSION_set1_master_key(s, c->psk_key, c->psk_len) ||
      !SSL_SESSION_set_cipher(s, cipher) ||
      !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
    SSL_SESSION_free(s);
    return NULL;
  }
  return s;
}

static int psk_use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id,
                      size_t *idlen, SSL_SESSION **sess)
{
  struct hb_tls *t = SSL_get_app_data(ssl);

  *sess = NULL;
  if (!t)
    return 0;
  if (md && !EVP_MD_is_a(md, "SHA256"))
    return 1;  /* no compatible PSK: the handshake fails */
  *sess = psk_session(ssl, t->ctx);
  if (!*sess)
    return 0;
  *id = (const unsigned char *) t->ctx->psk_id;
  *idlen = strlen(t->ctx->psk_id);
  return 1;
}

static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen,
                       SSL_SESSION **sess)
{
  struct hb_tls *t = SSL_get_app_data(ssl);

  *sess = NULL;
  if (!t)
    return 0;
  t->psk_offered = true;
  if (idlen != strlen(t->ctx->psk_id) ||
      memcmp(id, t->ctx->psk_id, idlen) != 0) {
    t->psk_unknown = true;
    printable(t->psk_offered_id, sizeof t->psk_offered_id, id, idlen);
    return 1;  /* no PSK: the handshake fails, there is no certificate */
  }
  *sess = psk_session(ssl, t->ctx);
  return *sess ? 1 : 0;
}

/* The TLS 1.3 suites OpenSSL 3.0 knows, and whether a PSK (SHA-256) may use
 * each. OpenSSL skips names it does not know, so they are checked here. */
static const struct { const char *name; bool sha256; } known_suites[] = {
  { "TLS_AES_128_GCM_SHA256", true },
  { "TLS_AES_256_GCM_SHA384", false },
  { "TLS_CHACHA20_POLY1305_SHA256", true },
  { "TLS_AES_128_CCM_SHA256", true },
  { "TLS_AES_128_CCM_8_SHA256", true },
};

int hb_tls_check_suites(const char *list, bool psk, char *err, size_t errlen)
{
  const char *s = list;

  if (!*list)
    return hb_fail(err, errlen, EINVAL, "no cipher suite named");
  for (;;) {
    size_t len = strcspn(s, ":");
    size_t i, n = sizeof known_suites / sizeof known_suites[0];

    for (i = 0; i < n; i++)
      if (strlen(known_suites[i].name) == len &&
          strncmp(known_suites[i].name, s, len) == 0)
        break;
    if (len == 0)
      return hb_fail(err, errlen, EINVAL, "empty cipher suite name in '%s'",
                     list);
    if (i == n) {
      char known[160] = "";

      for (i = 0; i < n; i++) {
        append(known, sizeof known, i ? ", " : "");
        append(known, sizeof known, known_suites[i].name);
      }
      return hb_fail(err, errlen, EINVAL,
                     "unknown TLS 1.3 cipher suite '%.*s' (known: %s)",
                     (int) (len > 64 ? 64 : len), s, known);
    }
    if (psk && !known_suites[i].sha256)
      return hb_fail(err, errlen, EINVAL,
                     "cipher suite %s cannot be used with a PSK (its hash is"
                     " not SHA-256)", known_suites[i].name);
    if (!s[len])
      return 0;
    s += len + 1;
  }
}

static int set_suites(struct hb_tls_ctx *c, const char *list, bool psk,
                      char *err, size_t errlen)
{
  int rc = hb_tls_check_suites(list, psk, err, errlen);

  if (rc < 0)
    return rc;
  if (SSL_CTX_set_ciphersuites(c->ssl_ctx, list) != 1) {
    char why[160];

    ssl_errors_to(why, sizeof why);
    ERR_clear_error();
    return hb_fail(err, errlen, EINVAL, "cipher suites '%s' refused: %s",
                   list, why);
  }
  return 0;
}

static int ctx_certs(struct hb_tls_ctx *c, const struct hb_tls_config *cfg,
                     char *err, size_t errlen)
{
  STACK_OF(X509_NAME) *names;
  int rc;

  if ((rc = readable("CA", cfg->ca_file, err, errlen)) < 0 ||
      (rc = readable("certificate", cfg->cert_file, err, errlen)) < 0 ||
      (rc = readable("key", cfg->key_file, err, errlen)) < 0)
    return rc;
  if (!cfg->peer_name || !*cfg->peer_name)
    return hb_fail(err, errlen, EINVAL, "no peer name configured");
  if (strlen(cfg->peer_name) >= sizeof c->peer_name)
    return hb_fail(err, errlen, EINVAL, "peer name is too long");
  snprintf(c->peer_name, sizeof c->peer_name, "%s", cfg->peer_name);

  if (SSL_CTX_load_verify_locations(c->ssl_ctx, cfg->ca_file, NULL) != 1)
    return ctx_fail(err, errlen, EINVAL, "CA", cfg->ca_file);
  names = SSL_load_client_CA_file(cfg->ca_file);
  if (names)
    SSL_CTX_set_client_CA_list(c->ssl_ctx, names);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cfg->cert_file) != 1)
    return ctx_fail(err, errlen, EINVAL, "certificate", cfg->cert_file);
  if (SSL_CTX_use_PrivateKey_file(c->ssl_ctx, cfg->key_file,
                                  SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
      return ctx_fail(err, errlen, EINVAL, "key", cfg->key_file);
    ERR_clear_error();
    return hb_fail(err, errlen, EINVAL, "certificate %s does not match key %s",
                   cfg->cert_file, cfg->key_file);
  }
  if (SSL_CTX_check_private_key(c->ssl_ctx) != 1) {
    ERR_clear_error();
    return hb_fail(err, errlen, EINVAL, "certificate %s does not match key %s",
                   cfg->cert_file, cfg->key_file);
  }
  if ((rc = set_suites(c, cfg->ciphersuites ? cfg->ciphersuites
                                             : HB_TLS_SUITES_DEFAULT,
                        false, err, errlen)) < 0)
    return rc;
  SSL_CTX_set_verify(c->ssl_ctx,
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     verify_cb);
  SSL_CTX_set_verify_depth(c->ssl_ctx, 4);
  return 0;
}

static int ctx_psk(struct hb_tls_ctx *c, const struct hb_tls_config *cfg,
                   char *err, size_t errlen)
{
  const char *id = cfg->psk_identity ? cfg->psk_identity
                                     : HB_TLS_PSK_IDENTITY_DEFAULT;
  int rc;

  if (cfg->ca_file || cfg->cert_file || cfg->key_file)
    return hb_fail(err, errlen, EINVAL,
                   "choose a PSK or certificates, not both");
  if (!*id || strlen(id) > PSK_ID_MAX)
    return hb_fail(err, errlen, EINVAL,
                   "PSK identity must be 1 to %d bytes", PSK_ID_MAX);
  snprintf(c->psk_id, sizeof c->psk_id, "%s", id);
  rc = load_psk(c, cfg->psk_file, err, errlen);
  if (rc < 0)
    return rc;
  c->psk = true;
  if ((rc = set_suites(c, cfg->ciphersuites ? cfg->ciphersuites
                                             : HB_TLS_SUITES_PSK_DEFAULT,
                        true, err, errlen)) < 0)
    return rc;
  SSL_CTX_set_psk_use_session_callback(c->ssl_ctx, psk_use_cb);
  SSL_CTX_set_psk_find_session_callback(c->ssl_ctx, psk_find_cb);
  /* The PSK authenticates; a client refuses a server's certificate (the
   * server never asks for one, see hb_tls_new). */
  SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, verify_cb);
  return 0;
}

int hb_tls_ctx_new(const struct hb_tls_config *cfg, struct hb_tls_ctx **out,
                   char *err, size_t errlen)
{
  struct hb_tls_ctx *c;
  int rc;

  c = calloc(1, sizeof *c);
  if (!c)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  c->refs = 1;
  ERR_clear_error();
  c->ssl_ctx = SSL_CTX_new(TLS_method());
  if (!c->ssl_ctx) {
    free(c);
    return ctx_fail(err, errlen, ENOMEM, "TLS", "context");
  }
  if (SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_3_VERSION) != 1) {
    rc = ctx_fail(err, errlen, EINVAL, "TLS", "context");
    goto fail;
  }
  /* No compression, no renegotiation (TLS 1.3 has neither, say it anyway),
   * no tickets or session cache: every connection is a full, mutually
   * authenticated handshake. Only psk_dhe_ke: clear ALLOW_NO_DHE_KEX. */
  SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_COMPRESSION |
                      SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_clear_options(c->ssl_ctx, SSL_OP_ALLOW_NO_DHE_KEX);
  SSL_CTX_set_num_tickets(c->ssl_ctx, 0);
  SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_OFF);
  /* hb_tls_write() takes what fits and may be retried from another
   * buffer holding the same bytes. */
  SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

  if (cfg->psk_file)
    rc = ctx_psk(c, cfg, err, errlen);
  else
    rc = ctx_certs(c, cfg, err, errlen);
  if (rc < 0)
    goto fail;
  *out = c;
  return 0;

fail:
  hb_tls_ctx_free(c);
  return rc;
}

void hb_tls_ctx_free(struct hb_tls_ctx *c)
{
  if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  SSL_CTX_free(c->ssl_ctx);
  OPENSSL_cleanse(c->psk_key, sizeof c->psk_key);
  free(c);
}

bool hb_tls_ctx_is_psk(const struct hb_tls_ctx *c)
{
  return c->psk;
}

/* ---- channel ------------------------------------------------------------ */

int hb_tls_new(struct hb_tls_ctx *ctx, enum hb_tls_side side,
               struct hb_tls **out, char *err, size_t errlen)
{
  struct hb_tls *t;
  BIO *inner = NULL;

  t = calloc(1, sizeof *t);
  if (!t)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  t->side = side;
  t->ctx = ctx;
  __atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
  ERR_clear_error();
  t->ssl = SSL_new(ctx->ssl_ctx);
  if (!t->ssl)
    goto nomem;
  if (BIO_new_bio_pair(&inner, HB_TLS_BUFSIZE, &t->net, HB_TLS_BUFSIZE) != 1)
    goto nomem;
  SSL_set_bio(t->ssl, inner, inner);
  SSL_set_app_data(t->ssl, t);
  if (ctx->psk && side == HB_TLS_SERVER)
    /* The PSK authenticates the client; asking it for a certificate
     * would only offer a second way in. */
    SSL_set_verify(t->ssl, SSL_VERIFY_NONE, NULL);
  if (!ctx->psk) {
    SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_WILDCARDS);
    if (SSL_set1_host(t->ssl, ctx->peer_name) != 1)
      goto nomem;
  }
  if (side == HB_TLS_CLIENT)
    SSL_set_connect_state(t->ssl);
  else
    SSL_set_accept_state(t->ssl);
  *out = t;
  return 0;

nomem:
  ERR_clear_error();
  hb_tls_free(t);
  return hb_fail(err, errlen, ENOMEM, "cannot create a TLS channel");
}

void hb_tls_free(struct hb_tls *t)
{
  if (!t)
    return;
  SSL_free(t->ssl);  /* frees the inner BIO */
  BIO_free(t->net);
  hb_tls_ctx_free(t->ctx);
  free(t);
}

/* Look at the first ciphertext bytes: a TLS record starts with content
 * type 22 (handshake) or 21 (alert), then major version 3. */
static void sniff(struct hb_tls *t, const unsigned char *p, size_t n)
{
  while (n > 0 && t->sniff_len < sizeof t->sniff) {
    t->sniff[t->sniff_len++] = *p++;
    n--;
  }
  if (t->sniff_done || t->established)
    return;
  if (t->sniff[0] != 0x16 && t->sniff[0] != 0x15)
    t->not_tls = true;
  else if (t->sniff_len >= 2 && t->sniff[1] != 0x03)
    t->not_tls = true;
  else if (t->sniff_len >= 3 && t->sniff[2] > 0x04)
    t->not_tls = true;
  if (t->not_tls || t->sniff_len >= 3)
    t->sniff_done = true;
}

size_t hb_tls_in_space(struct hb_tls *t, void **buf)
{
  char *p = NULL;
  int n = BIO_nwrite0(t->net, &p);

  if (n <= 0) {
    *buf = NULL;
    t->in_ptr = NULL;
    return 0;
  }
  *buf = p;
  t->in_ptr = p;
  return (size_t) n;
}

void hb_tls_in_commit(struct hb_tls *t, size_t n)
{
  char *p;

  if (n == 0 || !t->in_ptr)
    return;
  if (n > INT_MAX)
    n = INT_MAX;
  sniff(t, (const unsigned char *) t->in_ptr, n);
  BIO_nwrite(t->net, &p, (int) n);
  t->in_ptr = NULL;
}

size_t hb_tls_feed(struct hb_tls *t, const void *buf, size_t len)
{
  size_t done = 0;

  while (done < len) {
    void *space;
    size_t n = hb_tls_in_space(t, &space);

    if (n == 0)
      break;
    if (n > len - done)
      n = len - done;
    memcpy(space, (const char *) buf + done, n);
    hb_tls_in_commit(t, n);
    done += n;
  }
  return done;
}

void hb_tls_feed_eof(struct hb_tls *t)
{
  BIO_shutdown_wr(t->net);
}

size_t hb_tls_pending_out(struct hb_tls *t, const void **buf)
{
  char *p = NULL;
  int n = BIO_nread0(t->net, &p);

  if (n <= 0) {
    *buf = NULL;
    return 0;
  }
  *buf = p;
  return (size_t) n;
}

void hb_tls_consume_out(struct hb_tls *t, size_t n)
{
  char *p;

  if (n > INT_MAX)
    n = INT_MAX;
  if (n > 0)
    BIO_nread(t->net, &p, (int) n);
}

/* The handshake is done: check what it proved and note it for status. */
static int established(struct hb_tls *t)
{
  const char *name;

  if (SSL_version(t->ssl) != TLS1_3_VERSION)
    return fail(t, EPROTO, "negotiated %s, not TLS 1.3",
                SSL_get_version(t->ssl));
  if (t->ctx->psk) {
    if (!SSL_session_reused(t->ssl))
      return fail(t, EACCES, "peer did not authenticate with our PSK");
    snprintf(t->peer, sizeof t->peer, "psk:%s", t->ctx->psk_id);
  } else {
    if (!SSL_get0_peer_certificate(t->ssl))
      return fail(t, EACCES, "peer sent no certificate");
    if (SSL_get_verify_result(t->ssl) != X509_V_OK) {
      if (!t->verify_err)
        t->verify_err = (int) SSL_get_verify_result(t->ssl);
      return fail_verify(t);
    }
    name = SSL_get0_peername(t->ssl);
    snprintf(t->peer, sizeof t->peer, "%s", name ? name : t->peer_names);
  }
  snprintf(t->version, sizeof t->version, "%s", SSL_get_version(t->ssl));
  snprintf(t->cipher, sizeof t->cipher, "%s", SSL_get_cipher_name(t->ssl));
  t->established = true;
  return 0;
}

int hb_tls_handshake(struct hb_tls *t)
{
  int r;

  if (t->failed)
    return t->failed;
  if (t->established)
    return 0;
  if (t->not_tls)
    return fail_not_tls(t);
  ERR_clear_error();
  r = SSL_do_handshake(t->ssl);
  if (r == 1)
    return established(t);
  return ssl_fail(t, r);
}

ssize_t hb_tls_read(struct hb_tls *t, void *buf, size_t len)
{
  size_t n = 0;
  int rc;

  rc = hb_tls_handshake(t);
  if (rc < 0)
    return rc;
  if (t->peer_closed)
    return 0;
  if (len == 0)
    return -EINVAL;
  ERR_clear_error();
  if (SSL_read_ex(t->ssl, buf, len, &n) == 1)
    return (ssize_t) n;
  if (SSL_get_error(t->ssl, 0) == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    t->peer_closed = true;
    return 0;
  }
  return ssl_fail(t, 0);
}

ssize_t hb_tls_write(struct hb_tls *t, const void *buf, size_t len)
{
  size_t n = 0;
  int rc;

  rc = hb_tls_handshake(t);
  if (rc < 0)
    return rc;
  if (len == 0)
    return -EINVAL;
  ERR_clear_error();
  if (SSL_write_ex(t->ssl, buf, len, &n) == 1)
    return (ssize_t) n;
  return ssl_fail(t, 0);
}

int hb_tls_shutdown(struct hb_tls *t)
{
  int r;

  if (t->failed)
    return t->failed;
  if (!t->established)
    return 0;
  ERR_clear_error();
  r = SSL_shutdown(t->ssl);
  if (r >= 0)
    return 0;
  r = ssl_fail(t, r);
  return r == -EAGAIN ? 0 : r;
}

bool hb_tls_established(const struct hb_tls *t)
{
  return t->established && !t->failed;
}

const char *hb_tls_error(const struct hb_tls *t)
{
  return t->err;
}

const char *hb_tls_version(const struct hb_tls *t)
{
  return t->version;
}

const char *hb_tls_cipher(const struct hb_tls *t)
{
  return t->cipher;
}

const char *hb_tls_peer(const struct hb_tls *t)
{
  return t->peer;
}
