#!/usr/bin/python3
"""A hostile replication peer: frames from a seeded generator, with oracles.

Usage: peerfuzz.py PORT SIZE NODE_LOG HACTL CTL_SOCKET DISK ROLE SESSIONS SEED [TLSDIR]

Run by t0256-replication-wire-fuzz.sh against a real node (alpha,
listening on 127.0.0.1:PORT; TLS off, or with bravo's certificate from
TLSDIR, so that a frame sent in pieces crosses many TLS records). This
program poses as its peer bravo, session after session, and checks the
node's answers:

- valid sessions: a correct HELLO, then batches of requests (ROLE secondary:
  the node is Secondary and we are its Primary: WRITE, TRIM, ZERO, FLUSH,
  PING, PROMOTE, with random FUA and MAY_TRIM, aligned and unaligned, sent
  whole or a few bytes at a time); every request must be answered with an
  ACK for its id (PINGs with a PONG, which may cover several), and every
  acknowledged change goes into a model of the disk, which DISK must equal
  at the end (but where a TRIM, which is advisory, left any content);
- bad sessions: some valid frames, then one frame broken in a known way
  (magic, version, type, reserved, flags, lengths, offset, range, a type
  this version does not act on, an ACK for no request, a bad STATE...):
  the node must close the connection within a deadline and log one line
  naming the problem (checked against a pattern for that breakage);
- stalled sessions: a WRITE's header and part of its data, then silence:
  the node must drop us within the ping timeout and say so;
- chaos sessions (last, after the model check): random bytes after the
  HELLO, overlapping writes in flight, random header fields: the node may
  do anything but crash or hang.

After every session the node must still answer `hactl status` and wait for
its peer again (`hactl connect` if it excluded us). ROLE primary: the node
is Primary (promoted alone), we are its Secondary; only frames a Secondary
sends apply (PING, PONG, STATE, PROMOTE, ACK/NACK for nothing).

Exit 0 when every oracle held; 1 with a message naming the session, its
seed and what failed. HB_PEERFUZZ_VERBOSE=1 prints every batch sent.
"""
import json
import os
import random
import re
import select
import socket
import ssl
import struct
import subprocess
import sys
import time

MAGIC, VERSION = 0x4B4C4248, 2
HELLO, WRITE, TRIM, ZERO, FLUSH, ACK, NACK, PING, PONG, STATE, BITMAP, \
    RESYNC_REQ, RESYNC_DATA, DIGEST, PROMOTE = range(1, 16)
NAMES = {1: "HELLO", 2: "WRITE", 3: "TRIM", 4: "ZERO", 5: "FLUSH", 6: "ACK",
         7: "NACK", 8: "PING", 9: "PONG", 10: "STATE", 11: "BITMAP",
         12: "RESYNC_REQ", 13: "RESYNC_DATA", 14: "DIGEST", 15: "PROMOTE"}
F_FUA, F_MAY_TRIM = 1, 2
HDR = struct.Struct("<IHHIIQQII")
PRIMARY, SECONDARY = 1, 2
UPTODATE, INCONSISTENT = 1, 2
MAX_DATA = 64 << 20
DEADLINE = 10.0       # seconds for any answer or drop we wait for
VERBOSE = os.environ.get("HB_PEERFUZZ_VERBOSE") == "1"


class Failure(Exception):
    pass


def header(ftype, flags=0, count=0, rid=0, offset=0, plen=0, magic=MAGIC,
           version=VERSION, reserved=0):
    return HDR.pack(magic, version, ftype, flags, count, rid, offset, plen,
                    reserved)


def hello_payload(role, disk, size, resource=b"r0", node=b"bravo", node_id=2,
                  flags=0):
    return struct.pack("<IHBBIIQ4Q64s64s8x", VERSION, node_id, role, disk,
                       flags, 4096, size, 0, 0, 0, 0, resource, node)


def state_payload(role, disk, reserved=0, flags=0):
    return struct.pack("<BBHI", role, disk, reserved, flags)


class Node:
    """The node under test: its log, its control socket."""

    def __init__(self, log, hactl, ctl):
        self.log, self.hactl, self.ctl = log, hactl, ctl
        self.mark = 0

    def set_mark(self):
        self.mark = os.path.getsize(self.log)

    def logged(self):
        with open(self.log, "rb") as f:
            f.seek(self.mark)
            return f.read().decode("utf-8", "replace")

    def wait_logged(self, pattern, what, prefix="peer bravo:"):
        """A line (with prefix, if any) matching pattern, logged since the
        mark; waits for it up to DEADLINE."""
        rx = re.compile(pattern)
        end = time.monotonic() + DEADLINE
        while True:
            text = self.logged()
            for line in text.splitlines():
                if (prefix is None or prefix in line) and rx.search(line):
                    return line
            if time.monotonic() > end:
                tail = "\n  ".join(text.splitlines()[-5:])
                raise Failure(f"no log line /{pattern}/ for {what}; "
                              f"the node logged:\n  {tail}")
            time.sleep(0.02)

    def status(self):
        r = subprocess.run([self.hactl, "--socket", self.ctl, "status",
                            "--json"], capture_output=True, text=True,
                           timeout=DEADLINE)
        if r.returncode != 0:
            raise Failure(f"hactl status failed ({r.returncode}): "
                          f"{r.stderr.strip()}")
        return json.loads(r.stdout)

    def await_peer_again(self):
        """The node is alive and waits for its peer (connect if excluded)."""
        end = time.monotonic() + DEADLINE
        while True:
            st = self.status()
            conn = st["connection"]
            if conn == "Connecting":
                return st
            if conn in ("StandAlone", "SplitBrain"):
                r = subprocess.run([self.hactl, "--socket", self.ctl,
                                    "connect"], capture_output=True,
                                   text=True, timeout=DEADLINE)
                if r.returncode != 0:
                    raise Failure(f"hactl connect: {r.stderr.strip()}")
            if time.monotonic() > end:
                raise Failure(f"the node did not wait for its peer again "
                              f"(connection {conn})")
            time.sleep(0.02)


class Link:
    """One TCP connection to the node, frames in and out."""

    def __init__(self, port, tls=None):
        end = time.monotonic() + DEADLINE
        while True:
            try:
                self.s = socket.create_connection(("127.0.0.1", port),
                                                  timeout=DEADLINE)
                break
            except OSError:
                if time.monotonic() > end:
                    raise Failure(f"cannot connect to 127.0.0.1:{port}")
                time.sleep(0.05)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.setblocking(False)
        self.rx = b""
        self.eof = False
        if tls:
            self.s = tls.wrap_socket(self.s, server_hostname="alpha",
                                     do_handshake_on_connect=False)
            self.handshake()
        self.frames = []          # (type, flags, count, id, offset, payload)
        self.answer_pings = True
        self.pongs = []           # PONGs owed, sent between our frames
        self.sending = False

    def handshake(self):
        end = time.monotonic() + DEADLINE
        while True:
            try:
                self.s.do_handshake()
                return
            except ssl.SSLWantReadError:
                select.select([self.s], [], [], 0.05)
            except ssl.SSLWantWriteError:
                select.select([], [self.s], [], 0.05)
            except OSError:           # refused: no HELLO will come
                self.eof = True
                return
            if time.monotonic() > end:
                raise Failure("the TLS handshake did not complete")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, data, pieces=False, rng=None):
        """Send data whole, or in pieces of 1-64 bytes (the node must put
        frames back together from any split)."""
        chunks = [data]
        if pieces:
            chunks, i = [], 0
            while i < len(data):
                n = rng.randint(1, 64)
                chunks.append(data[i:i + n])
                i += n
        if self.pongs:            # owed PONGs go before, never inside, a frame
            chunks.insert(0, b"".join(self.pongs))
            self.pongs = []
        self.sending = True
        stuck = time.monotonic() + 3 * DEADLINE
        try:
            for c in chunks:
                view = memoryview(c)
                while view:
                    if self.eof:
                        return False
                    try:
                        n = self.s.send(view)
                        view = view[n:]
                    except (BlockingIOError, ssl.SSLWantReadError,
                            ssl.SSLWantWriteError):
                        if time.monotonic() > stuck:
                            raise Failure("the node stopped reading what "
                                          "we send")
                        self.pump(0.01)
                    except OSError:
                        self.eof = True
                        return False
        finally:
            self.sending = False
        return True

    def pump(self, timeout):
        """Read what the node sent within timeout; answer its PINGs."""
        buffered = isinstance(self.s, ssl.SSLSocket) and self.s.pending()
        r, _, _ = select.select([self.s], [], [], 0 if buffered else timeout)
        if not r and not buffered:
            return
        while True:
            try:
                b = self.s.recv(1 << 20)
            except (BlockingIOError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                break
            except OSError:
                b = b""
            if not b:
                self.eof = True
                break
            self.rx += b
        while len(self.rx) >= HDR.size:
            magic, version, ftype, flags, count, rid, off, plen, res = \
                HDR.unpack_from(self.rx)
            if magic != MAGIC or version != VERSION or res != 0 or \
                    ftype not in NAMES or plen > MAX_DATA:
                raise Failure(f"the node sent a bad frame header: "
                              f"{self.rx[:HDR.size].hex()}")
            if len(self.rx) < HDR.size + plen:
                break
            payload = self.rx[HDR.size:HDR.size + plen]
            self.rx = self.rx[HDR.size + plen:]
            self.frames.append((ftype, flags, count, rid, off, payload))
            if ftype == PING and self.answer_pings:
                self.pongs.append(header(PONG, rid=rid))
        if self.pongs and not self.sending and not self.eof:
            self.send(b"")

    def take(self, ftype):
        for i, fr in enumerate(self.frames):
            if fr[0] == ftype:
                return self.frames.pop(i)
        return None

    def wait_frame(self, ftype, what):
        end = time.monotonic() + DEADLINE
        while True:
            fr = self.take(ftype)
            if fr:
                return fr
            if self.eof:
                return None
            if time.monotonic() > end:
                raise Failure(f"no {NAMES[ftype]} from the node within "
                              f"{DEADLINE:.0f} s ({what})")
            self.pump(0.05)

    def wait_eof(self, what, limit=DEADLINE):
        end = time.monotonic() + limit
        while not self.eof:
            if time.monotonic() > end:
                raise Failure(f"the node kept the connection open "
                              f"{limit:.0f} s after {what}")
            self.pump(0.05)


class Fuzzer:
    def __init__(self, args):
        (port, size, log, hactl, ctl, disk, role, sessions, seed) = args[:9]
        self.tls = None
        if len(args) > 9:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.tls.minimum_version = ssl.TLSVersion.TLSv1_3
            self.tls.load_verify_locations(f"{args[9]}/ca.crt")
            self.tls.load_cert_chain(f"{args[9]}/bravo.crt",
                                     f"{args[9]}/bravo.key")
        self.port, self.size = int(port), int(size)
        self.node = Node(log, hactl, ctl)
        self.disk, self.role = disk, role
        self.sessions, self.seed = int(sessions), int(seed)
        with open(disk, "rb") as f:
            self.model = bytearray(f.read())
        if len(self.model) != self.size:
            raise Failure(f"{disk} has {len(self.model)} bytes, "
                          f"expected {self.size}")
        self.known = bytearray(b"\xff" * self.size)   # 0: a TRIM's bytes
        self.pings_open = []
        self.next_id = 1
        self.counts = {}
        self.kinds, self.kinds_seen, self.n_kinds = [], set(), 0
        self.order_rng = random.Random(self.seed)

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def rid(self):
        self.next_id += 1
        return self.next_id

    # ---- a session's start -------------------------------------------------

    def open(self, rng, our_hello=True):
        """Connect, take the node's HELLO, send ours. The node may still be
        tearing down the last connection: then it closes this one at once
        (or its HELLO never comes); try again."""
        self.pings_open = []
        end = time.monotonic() + DEADLINE
        while True:
            link = Link(self.port, self.tls)
            fr = link.wait_frame(HELLO, "its HELLO after connect")
            if fr:
                break
            link.close()
            if time.monotonic() > end:
                raise Failure("the node closed every connection before "
                              "its HELLO")
            time.sleep(0.05)
        p = fr[5]
        _, _, role, disk, _, _, size, _, _, _, _, res, name = \
            struct.unpack("<IHBBIIQ4Q64s64s8x", p)
        if size != self.size or res.rstrip(b"\0") != b"r0" or \
                name.rstrip(b"\0") != b"alpha":
            raise Failure(f"unexpected HELLO from the node: {p.hex()}")
        want = SECONDARY if self.role == "secondary" else PRIMARY
        if role != want:
            raise Failure(f"the node says role {role}, expected {want}")
        if our_hello:
            link.send(header(HELLO, plen=192) + self.our_hello())
        return link

    def our_hello(self):
        if self.role == "secondary":      # we are the Primary
            return hello_payload(PRIMARY, INCONSISTENT, self.size)
        return hello_payload(SECONDARY, UPTODATE, self.size)

    # ---- valid requests ----------------------------------------------------

    def some_range(self, rng, limit):
        if rng.random() < 0.5:              # aligned
            n = rng.randint(1, max(1, limit // 4096)) * 4096
            off = rng.randrange(0, (self.size - n) // 4096 + 1) * 4096
        else:
            n = rng.randint(1, limit)
            off = rng.randrange(0, self.size - n + 1)
        return off, n

    def batch(self, link, rng, pieces):
        """Non-overlapping requests at once; every one must be answered.
        PINGs are answered too, but one PONG may cover the PINGs that came
        while it was waiting to leave (even one of an earlier batch): a
        batch with PINGs must see a PONG for one of the PINGs not yet
        answered."""
        if self.role == "primary":
            frames, expect = [], {}
            for _ in range(rng.randint(1, 6)):
                i, x = self.rid(), rng.random()
                if x < 0.4:
                    frames.append(header(PING, rid=i))
                    self.pings_open.append(i)
                elif x < 0.7:         # it is Primary: refused, EBUSY
                    frames.append(header(PROMOTE, rid=i))
                    expect[i] = (NACK, 16)
                else:
                    frames.append(header(STATE, plen=8) +
                                  state_payload(SECONDARY, UPTODATE))
            link.send(b"".join(frames), pieces, rng)
            for i, t in expect.items():
                self.await_answer(link, i, t)
            self.await_pong(link, any(HDR.unpack_from(fr)[2] == PING
                                      for fr in frames))
            return
        used, frames, expect, changes = [], [], {}, []
        for _ in range(rng.randint(1, 8)):
            kind = rng.choice([WRITE, WRITE, WRITE, TRIM, ZERO, FLUSH, PING,
                               PROMOTE])
            i = self.rid()
            if kind == PING:
                frames.append(header(PING, rid=i))
                self.pings_open.append(i)
                continue
            if kind == FLUSH:
                frames.append(header(FLUSH, rid=i))
                expect[i] = ACK
                continue
            if kind == PROMOTE:       # we are Primary already: granted
                frames.append(header(PROMOTE, rid=i))
                expect[i] = ACK
                continue
            off, n = self.some_range(rng, 256 << 10)
            if any(off < e and b < off + n for b, e in used):
                continue                    # the Primary never overlaps
            used.append((off, off + n))
            flags = F_FUA if rng.random() < 0.2 else 0
            if kind == WRITE:
                data = rng.randbytes(n)
                frames.append(header(WRITE, flags, n, i, off, n) + data)
                changes.append((i, off, n, data))
            else:
                if kind == ZERO and rng.random() < 0.5:
                    flags |= F_MAY_TRIM
                frames.append(header(kind, flags, n, i, off))
                changes.append((i, off, n, None if kind == TRIM else bytes(n)))
            expect[i] = ACK
        if VERBOSE:
            for fr in frames:
                print("peerfuzz: send", NAMES.get(HDR.unpack_from(fr)[2]),
                      HDR.unpack_from(fr)[3:8], pieces, file=sys.stderr)
        link.send(b"".join(frames), pieces, rng)
        for i, t in expect.items():
            self.await_answer(link, i, t)
        self.await_pong(link, any(HDR.unpack_from(fr)[2] == PING
                                  for fr in frames))
        for i, off, n, data in changes:
            if data is None:              # TRIM: advisory, any content
                self.known[off:off + n] = bytes(n)
            else:
                self.model[off:off + n] = data
                self.known[off:off + n] = b"\xff" * n
            self.count("changes acknowledged")

    def await_pong(self, link, sent):
        """When the batch sent PINGs (sent), a PONG for one of the PINGs not
        answered yet. One answered later than the rest may have been
        covered: none is required but for the latest batch."""
        if not sent:
            return
        end = time.monotonic() + DEADLINE
        while True:
            for k, fr in enumerate(link.frames):
                if fr[0] == PONG and fr[3] in self.pings_open:
                    link.frames.pop(k)
                    self.pings_open = [p for p in self.pings_open if p > fr[3]]
                    return
            if link.eof:
                raise Failure("the node closed the connection before "
                              "answering a PING")
            if time.monotonic() > end:
                raise Failure(f"no PONG for PINGs {self.pings_open} within "
                              f"{DEADLINE:.0f} s")
            link.pump(0.05)

    def await_answer(self, link, i, want):
        """want: ACK, PONG, or (NACK, errno)."""
        ftype = want[0] if isinstance(want, tuple) else want
        end = time.monotonic() + DEADLINE
        while True:
            for k, fr in enumerate(link.frames):
                if fr[3] == i and fr[0] in (ftype, ACK, NACK, PONG):
                    link.frames.pop(k)
                    err = struct.unpack("<II", fr[5])[0] \
                        if fr[0] == NACK and len(fr[5]) == 8 else None
                    got = (NACK, err) if fr[0] == NACK else fr[0]
                    if got != want:
                        raise Failure(f"request {i}: answered {got}, "
                                      f"expected {want}")
                    return
            if link.eof:
                raise Failure(f"the node closed the connection before "
                              f"answering request {i}")
            if time.monotonic() > end:
                raise Failure(f"request {i} not answered within "
                              f"{DEADLINE:.0f} s")
            link.pump(0.05)

    # ---- broken frames -----------------------------------------------------

    def broken(self, rng):
        """One frame broken in a known way: (bytes, log pattern)."""
        i, sz = self.rid(), self.size
        cases = [
            (lambda: header(PING, magic=rng.randrange(1 << 32) ^ 1 | 2),
             r"bad frame from peer: bad magic"),
            (lambda: header(PING, version=rng.choice([0, 1, 3, 65535])),
             r"bad frame from peer: unsupported protocol version"),
            (lambda: header(rng.choice([0, 16, 17, 255, 65535]), rid=i),
             r"bad frame from peer: unknown frame type"),
            (lambda: header(FLUSH, rid=i, reserved=rng.randrange(1, 1 << 32)),
             r"bad frame from peer: FLUSH frame reserved field"),
            (lambda: header(FLUSH, flags=F_FUA, rid=i),
             r"bad frame from peer: FLUSH frame has unknown flags"),
            (lambda: header(WRITE, 1 << 5, 4096, i, 0, 4096) + rng.randbytes(4096),
             r"bad frame from peer: WRITE frame has unknown flags"),
            (lambda: header(WRITE, 0, MAX_DATA + 1, i, 0, MAX_DATA + 1),
             r"bad frame from peer: WRITE frame length \d+ exceeds the limit"),
            (lambda: header(WRITE, 0, 0, i, 0, 0),
             r"bad frame from peer: WRITE frame with zero length"),
            (lambda: header(WRITE, 0, 4096, i, 0, 4095) + rng.randbytes(4095),
             r"bad frame from peer: WRITE frame payload length 4095 does not "
             r"match"),
            (lambda: header(TRIM, 0, 4096, i, 0, 8) + bytes(8),
             r"bad frame from peer: TRIM frame carries 8 payload bytes"),
            (lambda: header(PING, count=1, rid=i),
             r"bad frame from peer: PING frame length 1 \(expected 0\)"),
            (lambda: header(FLUSH, rid=i, offset=512),
             r"bad frame from peer: FLUSH frame offset 512"),
            (lambda: header(ZERO, 0, 4096, i, (1 << 64) - 100),
             r"bad frame from peer: ZERO frame range overflows"),
            (lambda: header(WRITE, 0, 8192, i, sz - 4096, 8192) +
             rng.randbytes(8192),
             r"WRITE frame range \[\d+, \d+\) exceeds the exported size"),
            (lambda: header(TRIM, 0, 1, i, sz),
             r"TRIM frame range \[\d+, \d+\) exceeds the exported size"),
            (lambda: header(STATE, plen=7) + bytes(7),
             r"bad frame from peer: STATE frame payload length 7"),
            (lambda: header(STATE, plen=8) + state_payload(9, UPTODATE),
             r"bad STATE: STATE has unknown role 9"),
            (lambda: header(STATE, plen=8) + state_payload(SECONDARY, 0),
             r"bad STATE: STATE has unknown disk state 0"),
            (lambda: header(STATE, plen=8) + state_payload(SECONDARY, 1, 0,
                                                            1 << 9),
             r"bad STATE: STATE has unknown flags"),
            (lambda: header(ACK, rid=i + 1000000),
             r"ACK for unknown request id \d+"),
            (lambda: header(NACK, rid=i + 1000000, plen=8) +
             struct.pack("<II", 5, 0),
             r"NACK for unknown request id \d+"),
            (lambda: header(HELLO, plen=192) + self.our_hello(),
             r"unexpected HELLO frame"),
            (lambda: header(BITMAP, 0, 64, i, 0, 8) + bytes(8),
             r"unexpected BITMAP frame"),
            (lambda: header(RESYNC_REQ, 0, 4096, i, 0),
             r"unexpected RESYNC_REQ frame"),
            (lambda: header(RESYNC_DATA, 0, MAX_DATA, i, 0, MAX_DATA),
             r"unexpected RESYNC_DATA frame"),
            (lambda: header(DIGEST, 0, 4096, i, 0, 72) + bytes(72),
             r"unexpected DIGEST frame"),
        ]
        self.n_kinds = len(cases)
        if not self.kinds:            # every kind once, then again
            self.kinds = list(range(len(cases)))
            self.order_rng.shuffle(self.kinds)
        k = self.kinds.pop()
        make, pattern = cases[k]
        return k, make(), pattern

    def session_bad(self, link, rng):
        for _ in range(rng.randint(0, 2)):
            self.batch(link, rng, pieces=rng.random() < 0.3)
        k, data, pattern = self.broken(rng)
        self.kinds_seen.add(k)
        link.send(data, pieces=rng.random() < 0.3, rng=rng)
        link.wait_eof(f"broken frame kind {k} /{pattern}/")
        return self.node.wait_logged(pattern, f"broken frame kind {k}")

    def session_stall(self, link, rng):
        """A WRITE's header and half its data, then silence: the node must
        drop us by its ping timeout (it hears nothing more)."""
        if self.role == "secondary":
            n = 1 << 20
            link.send(header(WRITE, 0, n, self.rid(), 0, n) +
                      rng.randbytes(n // 2))
        else:
            link.send(header(PING, rid=self.rid())[:20])
        link.answer_pings = False
        link.wait_eof("a frame cut short and silence")
        return self.node.wait_logged(r"no answer for \d+ ms \(ping timeout\)",
                                     "a frame cut short and silence")

    def session_chaos(self, link, rng):
        """Anything: the node may keep or drop the link, but not crash."""
        kind = rng.randrange(3)
        if kind == 1 and self.role != "secondary":
            kind = 2
        if kind == 0:
            link.send(rng.randbytes(rng.randint(1, 8192)))
        elif kind == 1 and self.role == "secondary":
            off = rng.randrange(0, self.size - (64 << 10))
            for _ in range(rng.randint(2, 16)):     # overlapping, in flight
                n = rng.randint(1, 64 << 10)
                o = off + rng.randrange(0, 64 << 10)
                if o + n > self.size:
                    n = self.size - o
                link.send(header(WRITE, 0, n, self.rid(), o, n) +
                          rng.randbytes(n))
        else:
            h = bytearray(header(rng.randrange(1, 16), rid=self.rid()))
            for _ in range(rng.randint(1, 4)):
                h[rng.randrange(6, 40)] = rng.randrange(256)
            link.send(bytes(h) + rng.randbytes(rng.randint(0, 256)))
        link.pump(0.2)
        self.count(("random bytes", "overlapping writes",
                    "random header fields")[kind])

    # ---- the run -----------------------------------------------------------

    def run(self):
        rng = random.Random(self.seed)
        plan = ["bad"] * self.sessions
        for k in range(0, self.sessions, 3):
            plan[k] = "valid"
        plan[self.sessions // 2] = "stall"
        rng.shuffle(plan)
        chaos = max(3, self.sessions // 4)
        for n, kind in enumerate(plan + ["chaos"] * chaos):
            seed = rng.randrange(1 << 62)
            srng = random.Random(seed)
            what = f"session {n} ({kind}, seed {seed})"
            try:
                if kind == "chaos" and n == len(plan):
                    self.check_model()
                self.node.set_mark()
                link = self.open(srng)
                try:
                    if kind == "valid":
                        for _ in range(srng.randint(1, 4)):
                            self.batch(link, srng,
                                       pieces=srng.random() < 0.3)
                    elif kind == "bad":
                        self.session_bad(link, srng)
                    elif kind == "stall":
                        self.session_stall(link, srng)
                    else:
                        self.session_chaos(link, srng)
                finally:
                    link.close()
                self.node.await_peer_again()
                self.count(f"{kind} sessions")
            except Failure as e:
                raise Failure(f"{what}: {e}") from None
        st = self.node.status()
        if self.role == "secondary" and st["disk"] == "Failed":
            raise Failure("the node marked its disk Failed")
        if plan.count("bad") >= self.n_kinds > len(self.kinds_seen):
            raise Failure(f"only {len(self.kinds_seen)} of {self.n_kinds} "
                          f"kinds of broken frame were sent")
        summary = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        print(f"peerfuzz: ok: {summary}; {len(self.kinds_seen)} kinds of "
              f"broken frame")

    def check_model(self):
        """Every acknowledged change is on the node's disk, nothing else."""
        with open(self.disk, "rb") as f:
            got = f.read()
        mask = int.from_bytes(self.known, "big")
        if int.from_bytes(got, "big") & mask != \
                int.from_bytes(self.model, "big") & mask:
            first = next(i for i in range(len(got))
                         if self.known[i] and got[i] != self.model[i])
            raise Failure(f"{self.disk} differs from the model of the "
                          f"acknowledged requests, first at byte {first}")
        self.count("model checks")


def run_script(name, usage, nargs, make):
    """A script's main: usage (exit 2) on a wrong number of arguments, one
    FAIL line (exit 1) on a Failure, else 0."""
    if len(sys.argv) - 1 not in nargs:
        print(usage, file=sys.stderr)
        return 2
    try:
        make(sys.argv[1:]).run()
    except Failure as e:
        print(f"{name}: FAIL: {e}", file=sys.stderr)
        return 1
    return 0


def main():
    return run_script("peerfuzz", __doc__.splitlines()[2], (9, 10), Fuzzer)


if __name__ == "__main__":
    sys.exit(main())
