/* The peer link's TLS 1.3 channel: OpenSSL over a BIO pair, no sockets.
 *
 * The thread that owns the peer socket owns the channel (OpenSSL BIO pairs
 * do no locking). It moves ciphertext between the socket and the channel
 * and plaintext between the channel and the protocol:
 *
 *   socket --recv--> hb_tls_in_space()/hb_tls_in_commit() or hb_tls_feed()
 *   hb_tls_pending_out()/hb_tls_consume_out() --send--> socket
 *   hb_tls_handshake(), hb_tls_read(), hb_tls_write(): plaintext
 *
 * Both buffers are rings inside the BIO pair: hb_tls_pending_out() exposes
 * the next contiguous run of ciphertext so the caller hands the pointer to
 * io_uring send without copying; the bytes stay put until consumed, while
 * new ciphertext is appended behind them. Likewise hb_tls_in_space() exposes
 * free room that a recv can fill directly. At most one send and one recv
 * region may be outstanding at a time.
 *
 * Authentication (DESIGN.md invariant 5) is mutual and happens in the
 * handshake, before any data: either X.509 (both sides present a
 * certificate from the configured CA, and the peer's must name the expected
 * peer in a SAN DNS entry, or the CN when it has no SAN DNS entry) or an
 * external TLS 1.3 PSK, used only with an (EC)DHE key exchange (psk_dhe_ke).
 * TLS 1.3 only; no compression, renegotiation, session tickets or
 * resumption. Note that in TLS 1.3 the client finishes its handshake before
 * the server has checked the client's certificate: a refusal by the server
 * reaches the client as an error from its next hb_tls_read().
 *
 * Return values: 0 or a count on success; -EAGAIN when the channel needs
 * ciphertext fed in or taken out (not an error: send what
 * hb_tls_pending_out() holds, then wait for the socket); other -errno on
 * failure, with one line in hb_tls_error():
 *   -EACCES      authentication failed (ours or the peer's)
 *   -EPROTO      not TLS, or a protocol error
 *   -ECONNRESET  the peer closed the connection without close_notify
 *   -ENOMEM
 * A failure is final: every later call returns the same code. Send what
 * hb_tls_pending_out() still holds (an alert telling the peer why), then
 * close the socket and hb_tls_free() the channel. */
#ifndef HB_TLS_H
#define HB_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Size of each direction's ciphertext ring. */
#define HB_TLS_BUFSIZE (256u << 10)
/* PSK length limits (bytes; the file holds twice as many hex digits). */
#define HB_TLS_PSK_MIN 16u
#define HB_TLS_PSK_MAX 64u
#define HB_TLS_PSK_IDENTITY_DEFAULT "hablock"
/* TLS 1.3 cipher suites offered, in order of preference, when the
 * configuration names none. AES-128-GCM first: the link encrypts every byte
 * written, and OpenSSL 3.0 runs it about 20 % faster than AES-256-GCM on
 * this machine (docs/benchmarks.md); it is TLS 1.3's mandatory suite. A PSK
 * allows only suites whose hash is SHA-256, the PSK's. */
#define HB_TLS_SUITES_DEFAULT \
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define HB_TLS_SUITES_PSK_DEFAULT \
  "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

struct hb_tls_config {
  /* X.509 mode: all four are required. */
  const char *ca_file;      /* PEM: the CA(s) that sign the peer's cert */
  const char *cert_file;    /* PEM: our certificate (chain) */
  const char *key_file;     /* PEM: our private key */
  const char *peer_name;    /* the name the peer's certificate must carry */
  /* PSK mode: psk_file set and the X.509 files unset. */
  const char *psk_file;     /* hex, whitespace ignored; not world-accessible */
  const char *psk_identity; /* NULL: HB_TLS_PSK_IDENTITY_DEFAULT */
  /* Both modes: the TLS 1.3 suites to offer and accept, colon-separated,
   * in order of preference (OpenSSL's names). NULL: the defaults above. */
  const char *ciphersuites;
};

enum hb_tls_side { HB_TLS_CLIENT, HB_TLS_SERVER };

struct hb_tls_ctx;  /* immutable once made; may be shared by threads */
struct hb_tls;      /* one connection; one thread at a time */

/* Check a colon-separated list of TLS 1.3 cipher suites: every name known,
 * none empty, and (PSK) every one hashing with SHA-256. Returns 0, or
 * -EINVAL with one line in err naming the bad suite. */
int hb_tls_check_suites(const char *list, bool psk, char *err, size_t errlen);

/* Load the configuration. Returns 0, or -errno with one line in err naming
 * the file and the problem ("cannot read CA file X: ...", "certificate X
 * does not match key Y", "PSK file X: ..."). */
int hb_tls_ctx_new(const struct hb_tls_config *cfg, struct hb_tls_ctx **out,
                   char *err, size_t errlen);
/* Drop the caller's reference; channels keep their own. NULL is fine. */
void hb_tls_ctx_free(struct hb_tls_ctx *ctx);
bool hb_tls_ctx_is_psk(const struct hb_tls_ctx *ctx);

/* A new channel: the side that connected is the client. */
int hb_tls_new(struct hb_tls_ctx *ctx, enum hb_tls_side side,
               struct hb_tls **out, char *err, size_t errlen);
void hb_tls_free(struct hb_tls *t);

/* Ciphertext from the peer. hb_tls_in_space() returns how many bytes fit
 * contiguously at *buf (0: the ring is full; read plaintext first);
 * hb_tls_in_commit() hands over the first n of them. hb_tls_feed() copies
 * and returns how many bytes it took. hb_tls_feed_eof() says the peer
 * closed its end of the socket. */
size_t hb_tls_in_space(struct hb_tls *t, void **buf);
void hb_tls_in_commit(struct hb_tls *t, size_t n);
size_t hb_tls_feed(struct hb_tls *t, const void *buf, size_t len);
void hb_tls_feed_eof(struct hb_tls *t);

/* Ciphertext for the peer: the next contiguous run (0: nothing to send),
 * and dropping the first n bytes of it once sent. The pointer stays valid
 * until consumed, across other calls on the channel. */
size_t hb_tls_pending_out(struct hb_tls *t, const void **buf);
void hb_tls_consume_out(struct hb_tls *t, size_t n);

/* Drive the handshake: 0 once established, -EAGAIN, or failure. */
int hb_tls_handshake(struct hb_tls *t);
/* Plaintext from the peer: > 0 bytes, 0 after the peer's close_notify,
 * -EAGAIN, or failure. Completes the handshake first if needed. */
ssize_t hb_tls_read(struct hb_tls *t, void *buf, size_t len);
/* Plaintext to the peer: > 0 bytes taken (maybe fewer than len), -EAGAIN
 * (take ciphertext out, then call again with the same bytes), or failure. */
ssize_t hb_tls_write(struct hb_tls *t, const void *buf, size_t len);
/* Queue our close_notify (nothing before the handshake completed); send
 * what hb_tls_pending_out() then holds before closing. 0 or failure. */
int hb_tls_shutdown(struct hb_tls *t);

bool hb_tls_established(const struct hb_tls *t);
/* The last failure's line, "" if none. */
const char *hb_tls_error(const struct hb_tls *t);
/* After the handshake (else ""): "TLSv1.3", the cipher suite
 * ("TLS_AES_256_GCM_SHA384"), and who the peer proved to be: the name its
 * certificate matched ("bravo"), or "psk:<identity>". */
const char *hb_tls_version(const struct hb_tls *t);
const char *hb_tls_cipher(const struct hb_tls *t);
const char *hb_tls_peer(const struct hb_tls *t);

#endif
