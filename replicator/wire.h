/* The peer wire protocol: encode and decode, pure, no I/O.
 *
 * Every frame is a fixed 40-byte header followed by `payload_len` bytes of
 * payload. All integers are little-endian; the on-wire structs keep the
 * endianness in their field types (struct hb_le16/32/64), so a raw field
 * cannot be used without hb_le*_get(). In-memory structs (struct hb_frame,
 * struct hb_hello, ...) are separate and carry native integers.
 *
 * The byte layout is documented in docs/wire-protocol.md; the
 * _Static_asserts in wire.c pin every size and offset.
 *
 * Nothing from the wire is trusted: hb_wire_decode_header() checks, in this
 * order, the length of the buffer, the magic, the version, the type, the
 * reserved field, the flags, the per-type length limits and the offset
 * arithmetic, before the caller reads a byte of payload. Each failure returns
 * its own negative code (HB_WIRE_E*, each a -errno) and one line naming the
 * problem; the caller logs the line and drops the connection.
 *
 * Encoders check the same rules, so a bug on the sending side shows up as
 * an error there instead of a dropped connection on the peer. */
#ifndef HB_WIRE_H
#define HB_WIRE_H

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- little-endian wrappers ------------------------------------------- */

struct hb_le16 { uint16_t le_; };
struct hb_le32 { uint32_t le_; };
struct hb_le64 { uint64_t le_; };

static inline uint16_t hb_le16_get(struct hb_le16 v) { return le16toh(v.le_); }
static inline uint32_t hb_le32_get(struct hb_le32 v) { return le32toh(v.le_); }
static inline uint64_t hb_le64_get(struct hb_le64 v) { return le64toh(v.le_); }
static inline struct hb_le16 hb_le16_put(uint16_t v)
{
  return (struct hb_le16) { htole16(v) };
}
static inline struct hb_le32 hb_le32_put(uint32_t v)
{
  return (struct hb_le32) { htole32(v) };
}
static inline struct hb_le64 hb_le64_put(uint64_t v)
{
  return (struct hb_le64) { htole64(v) };
}

/* ---- constants ---------------------------------------------------------- */

/* "HBLK" as bytes on the wire: 48 42 4c 4b. */
#define HB_WIRE_MAGIC        0x4b4c4248u
/* The one protocol version this build speaks. Bump it on any change to a
 * layout or a rule below; peers must speak the same version. */
#define HB_WIRE_VERSION      2u

#define HB_WIRE_HDR_SIZE     40u
#define HB_WIRE_HELLO_SIZE   192u
#define HB_WIRE_STATE_SIZE   8u
#define HB_WIRE_NACK_SIZE    8u
#define HB_WIRE_DIGEST_SIZE  72u

/* Largest data range of one WRITE, RESYNC_DATA, RESYNC_REQ or DIGEST. */
#define HB_WIRE_MAX_DATA     (64u << 20)
/* Largest BITMAP payload (bytes; 8 Mi bits). */
#define HB_WIRE_MAX_BITMAP   (1u << 20)
/* Largest digest carried by DIGEST. */
#define HB_WIRE_DIGEST_MAX   64u
/* Resource and node names: at most 63 bytes, NUL-padded to 64 on the wire. */
#define HB_WIRE_NAME_MAX     63u
/* Generation identifiers in HELLO: current, bitmap, history[2]. */
#define HB_WIRE_GEN_COUNT    4u

enum hb_wire_type {
  HB_WIRE_HELLO = 1,       /* handshake; payload struct hb_wire_hello */
  HB_WIRE_WRITE = 2,       /* [offset, +count) := payload (count bytes) */
  HB_WIRE_TRIM = 3,        /* discard [offset, +count) */
  HB_WIRE_ZERO = 4,        /* zero [offset, +count); flag MAY_TRIM */
  HB_WIRE_FLUSH = 5,       /* make everything acknowledged so far durable */
  HB_WIRE_ACK = 6,         /* request `id` completed */
  HB_WIRE_NACK = 7,        /* request `id` failed; payload hb_wire_nack */
  HB_WIRE_PING = 8,        /* liveness probe; the peer answers PONG, same id */
  HB_WIRE_PONG = 9,
  HB_WIRE_STATE = 10,      /* role / disk state change; payload hb_wire_state */
  HB_WIRE_BITMAP = 11,     /* out-of-sync bits [offset, +count) in le64 words */
  HB_WIRE_RESYNC_REQ = 12, /* SyncTarget asks for [offset, +count) */
  HB_WIRE_RESYNC_DATA = 13,/* answer to RESYNC_REQ `id`: count bytes of data */
  HB_WIRE_DIGEST = 14,     /* digest of [offset, +count); hb_wire_digest */
  HB_WIRE_PROMOTE = 15,    /* the sender asks to become Primary: ACK grants,
                              NACK (EBUSY) refuses */
};
#define HB_WIRE_TYPE_MIN HB_WIRE_HELLO
#define HB_WIRE_TYPE_MAX HB_WIRE_PROMOTE

/* Header flags; each type accepts only its own (see docs/wire-protocol.md). */
#define HB_WIRE_F_FUA        (1u << 0)  /* WRITE TRIM ZERO */
#define HB_WIRE_F_MAY_TRIM   (1u << 1)  /* ZERO */
#define HB_WIRE_F_LAST       (1u << 2)  /* BITMAP: last chunk of the bitmap */
#define HB_WIRE_F_REPLY      (1u << 3)  /* DIGEST: answer to a DIGEST */
#define HB_WIRE_F_VERIFY     (1u << 4)  /* DIGEST: online verify, not resync */

/* Distinct failure codes of the decoders (all negative errno values). */
#define HB_WIRE_ETRUNC   (-ENODATA)          /* buffer shorter than needed */
#define HB_WIRE_EMAGIC   (-EBADMSG)          /* bad magic */
#define HB_WIRE_EVERSION (-EPROTONOSUPPORT)  /* other protocol version */
#define HB_WIRE_ETYPE    (-EOPNOTSUPP)       /* unknown frame type */
#define HB_WIRE_EFLAGS   (-EINVAL)           /* flag not valid for the type */
#define HB_WIRE_ELENGTH  (-EMSGSIZE)         /* payload/count length rule */
#define HB_WIRE_ERANGE   (-ERANGE)           /* offset+count overflows or
                                                passes the exported size */
#define HB_WIRE_EFIELD   (-EPROTO)           /* a field that must be zero or
                                                in an enum is not */
/* hb_wire_check_hello() refusals. */
#define HB_WIRE_ERESOURCE (-ENXIO)           /* other resource name */
#define HB_WIRE_ESIZE     (-EFBIG)           /* other exported size */
#define HB_WIRE_ENODE     (-EEXIST)          /* peer has our node id */

/* Roles and disk states as sent on the wire. 0 is never valid. */
enum hb_wire_role {
  HB_WIRE_ROLE_PRIMARY = 1,
  HB_WIRE_ROLE_SECONDARY = 2,
};
enum hb_wire_disk {
  HB_WIRE_DISK_UPTODATE = 1,
  HB_WIRE_DISK_INCONSISTENT = 2,
  HB_WIRE_DISK_OUTDATED = 3,
  HB_WIRE_DISK_DISKLESS = 4,
  HB_WIRE_DISK_FAILED = 5,
};

/* HELLO flags. */
#define HB_HELLO_F_DISCARD_MY_DATA (1u << 0)  /* we are the split-brain victim */
#define HB_HELLO_F_CONSISTENT      (1u << 1)  /* our metadata says consistent */
#define HB_HELLO_F_CRASHED_PRIMARY (1u << 2)  /* we crashed while Primary */
#define HB_HELLO_F_OUT_OF_SYNC    (1u << 3)  /* we hold blocks the peer lacks */
#define HB_HELLO_F_ALL (HB_HELLO_F_DISCARD_MY_DATA | HB_HELLO_F_CONSISTENT | \
                        HB_HELLO_F_CRASHED_PRIMARY | HB_HELLO_F_OUT_OF_SYNC)

/* Digest algorithms for DIGEST. */
enum hb_wire_digest_alg {
  HB_DIGEST_CRC32C = 1,   /* 4 bytes */
  HB_DIGEST_SHA256 = 2,   /* 32 bytes */
};

/* ---- on-wire structs ---------------------------------------------------- */

struct hb_wire_header {
  struct hb_le32 magic;        /* HB_WIRE_MAGIC */
  struct hb_le16 version;      /* HB_WIRE_VERSION */
  struct hb_le16 type;         /* enum hb_wire_type */
  struct hb_le32 flags;        /* HB_WIRE_F_* valid for the type */
  struct hb_le32 count;        /* bytes of the device range (bits: BITMAP) */
  struct hb_le64 id;           /* request id, echoed by ACK/NACK/PONG */
  struct hb_le64 offset;       /* device offset in bytes (bits: BITMAP) */
  struct hb_le32 payload_len;  /* bytes following the header */
  struct hb_le32 reserved;     /* zero */
};

struct hb_wire_hello {
  struct hb_le32 proto_version;
  struct hb_le16 node_id;
  uint8_t role;                /* enum hb_wire_role */
  uint8_t disk;                /* enum hb_wire_disk */
  struct hb_le32 flags;        /* HB_HELLO_F_* */
  struct hb_le32 bm_granularity; /* bytes per out-of-sync bit; 0 = unknown */
  struct hb_le64 exported_size;
  struct hb_le64 gen[HB_WIRE_GEN_COUNT];
  char resource[HB_WIRE_NAME_MAX + 1];   /* NUL-padded */
  char node_name[HB_WIRE_NAME_MAX + 1];  /* NUL-padded */
  struct hb_le64 reserved;     /* zero */
};

struct hb_wire_state {
  uint8_t role;                /* enum hb_wire_role */
  uint8_t disk;                /* enum hb_wire_disk */
  struct hb_le16 reserved;     /* zero */
  struct hb_le32 flags;        /* HB_HELLO_F_* */
};

struct hb_wire_nack {
  struct hb_le32 error;        /* positive errno, 1..4095 */
  struct hb_le32 reserved;     /* zero */
};

struct hb_wire_digest {
  struct hb_le16 alg;          /* enum hb_wire_digest_alg */
  uint8_t len;                 /* digest bytes used, fixed per alg */
  uint8_t reserved[5];         /* zero */
  uint8_t digest[HB_WIRE_DIGEST_MAX]; /* zero past len */
};

/* ---- in-memory structs -------------------------------------------------- */

struct hb_frame {
  uint16_t type;               /* enum hb_wire_type */
  uint32_t flags;
  uint32_t count;
  uint32_t payload_len;
  uint64_t id;
  uint64_t offset;
};

struct hb_hello {
  uint32_t proto_version;
  uint16_t node_id;
  uint8_t role;
  uint8_t disk;
  uint32_t flags;
  uint32_t bm_granularity;
  uint64_t exported_size;
  uint64_t gen[HB_WIRE_GEN_COUNT];
  char resource[HB_WIRE_NAME_MAX + 1];
  char node_name[HB_WIRE_NAME_MAX + 1];
};

struct hb_state_msg {
  uint8_t role;
  uint8_t disk;
  uint32_t flags;
};

struct hb_digest {
  uint16_t alg;
  uint8_t len;
  uint8_t bytes[HB_WIRE_DIGEST_MAX];
};

/* ---- functions ---------------------------------------------------------- */

/* "WRITE", ..., or "?" for an unknown type. */
const char *hb_wire_type_name(unsigned type);
const char *hb_wire_role_name(unsigned role);
const char *hb_wire_disk_name(unsigned disk);

/* Check a frame against the per-type rules (what decode checks past the
 * version). Returns 0 or an HB_WIRE_E* code with err filled (err may be
 * NULL). */
int hb_wire_check_frame(const struct hb_frame *f, char *err, size_t errlen);

/* Encode f's header into buf. Returns HB_WIRE_HDR_SIZE, -ENOBUFS when buflen
 * is too small, or the hb_wire_check_frame() code for an invalid frame. */
int hb_wire_encode_header(const struct hb_frame *f, void *buf, size_t buflen);

/* Decode and validate the header at buf (any alignment). len is how many
 * bytes the caller holds; fewer than HB_WIRE_HDR_SIZE is HB_WIRE_ETRUNC.
 * Returns 0 with *out filled, or an HB_WIRE_E* code with one line in err:
 * "bad magic 0x...", "unsupported protocol version N (we speak M)",
 * "unknown frame type N", "WRITE frame length N exceeds the limit of M",
 * ... On success, offset + count does not overflow. */
int hb_wire_decode_header(const void *buf, size_t len, struct hb_frame *out,
                          char *err, size_t errlen);

/* Whether f's device range [offset, offset+count) fits an exported size of
 * `size` bytes (only for WRITE TRIM ZERO RESYNC_REQ RESYNC_DATA DIGEST; other
 * types pass). Call it on every decoded frame once the size is known.
 * Returns 0 or HB_WIRE_ERANGE with err filled. */
int hb_wire_check_range(const struct hb_frame *f, uint64_t size,
                        char *err, size_t errlen);

/* Whether the type's range is device bytes checked by hb_wire_check_range. */
bool hb_wire_type_has_range(unsigned type);

/* Payload bytes of a BITMAP frame carrying `bits` bits: whole le64 words. */
static inline uint32_t hb_wire_bitmap_payload_len(uint32_t bits)
{
  return (uint32_t) (((uint64_t) bits + 63) / 64 * 8);
}

/* HELLO payload. Encode returns HB_WIRE_HELLO_SIZE, -ENOBUFS, or
 * HB_WIRE_EFIELD for an invalid hello (name empty or too long, bad role or
 * disk state, unknown flags); decode returns 0 or an HB_WIRE_E* code. len
 * must be exactly HB_WIRE_HELLO_SIZE. */
int hb_wire_encode_hello(const struct hb_hello *h, void *buf, size_t buflen);
int hb_wire_decode_hello(const void *buf, size_t len, struct hb_hello *out,
                         char *err, size_t errlen);

/* Whether the two ends of a connection may talk: same protocol version, same
 * resource name, same exported size, different node ids. Returns 0, or
 * HB_WIRE_EVERSION / HB_WIRE_ERESOURCE / HB_WIRE_ESIZE / HB_WIRE_ENODE with
 * one line naming both values. Pure. */
int hb_wire_check_hello(const struct hb_hello *local,
                        const struct hb_hello *remote,
                        char *err, size_t errlen);

/* STATE payload (HB_WIRE_STATE_SIZE bytes). */
int hb_wire_encode_state(const struct hb_state_msg *s, void *buf,
                         size_t buflen);
int hb_wire_decode_state(const void *buf, size_t len, struct hb_state_msg *out,
                         char *err, size_t errlen);

/* NACK payload: a positive errno (1..4095). */
int hb_wire_encode_nack(int errnum, void *buf, size_t buflen);
int hb_wire_decode_nack(const void *buf, size_t len, int *errnum,
                        char *err, size_t errlen);

/* DIGEST payload (HB_WIRE_DIGEST_SIZE bytes); len must match the algorithm. */
int hb_wire_encode_digest(const struct hb_digest *d, void *buf, size_t buflen);
int hb_wire_decode_digest(const void *buf, size_t len, struct hb_digest *out,
                          char *err, size_t errlen);

#endif
