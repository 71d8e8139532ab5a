#!/usr/bin/python3
"""NBD command semantics against a running hablock server.

Usage: semantics.py URI DISKFILE

Every read is compared with a model of the disk (a bytearray that starts
as a copy of DISKFILE and follows every acknowledged command). At the end
the device and DISKFILE itself must both equal the model. Block status (base:allocation) must cover the device with
contiguous extents, every hole must read as zeroes in the model, and the
ranges trimmed or zeroed with may-trim must be holes. Run by
t0040-nbdsh-semantics.sh; needs the distribution's python3 (import nbd).
"""
import errno
import os
import random
import sys

import nbd

KIB = 1024
MIB = 1024 * KIB
BLOCK = 4096


def connect(uri, strict_bounds=True, allocation=False):
    h = nbd.NBD()
    if allocation:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if not strict_bounds:
        # Let out-of-range requests reach the server: it must refuse them.
        h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
    h.connect_uri(uri)
    return h


class Failure(Exception):
    pass


class Disk:
    def __init__(self, uri, path):
        self.uri = uri
        self.h = connect(uri)
        self.size = self.h.get_size()
        with open(path, "rb") as f:
            self.model = bytearray(f.read())
        if len(self.model) != self.size:
            raise Failure(f"export size {self.size} != file size {len(self.model)}")

    # Commands that change the disk: send, then update the model.
    def write(self, off, data, flags=0):
        self.h.pwrite(data, off, flags)
        self.model[off:off + len(data)] = data

    def zero(self, off, n, flags=0):
        self.h.zero(n, off, flags)
        self.model[off:off + n] = bytes(n)

    def trim(self, off, n):
        # Trim punches a hole: the range then reads as zeros.
        self.h.trim(n, off)
        self.model[off:off + n] = bytes(n)

    def expect(self, off, n, what, h=None):
        got = (h or self.h).pread(n, off)
        want = bytes(self.model[off:off + n])
        if got != want:
            i = next(i for i in range(n) if got[i] != want[i])
            raise Failure(f"{what}: read [{off}, +{n}): first difference at "
                          f"byte {off + i}: expected {want[i]:#04x}, got {got[i]:#04x}")


def rand_bytes(rng, n):
    return rng.randbytes(n)


def basic(d, rng):
    d.write(BLOCK, rand_bytes(rng, 64 * KIB))
    d.expect(0, 80 * KIB, "write/read aligned")
    d.h.flush()
    d.expect(0, 80 * KIB, "read after flush")
    d.write(128 * KIB, rand_bytes(rng, 12 * KIB), nbd.CMD_FLAG_FUA)
    d.expect(120 * KIB, 28 * KIB, "FUA write")
    d.write(200 * KIB + 3, rand_bytes(rng, 5000), nbd.CMD_FLAG_FUA)
    d.expect(196 * KIB, 16 * KIB, "unaligned FUA write")


def trim_and_zero(d, rng):
    base = 1 * MIB
    d.write(base, rand_bytes(rng, 1 * MIB))
    d.trim(base, 256 * KIB)
    d.expect(base - BLOCK, 256 * KIB + 2 * BLOCK, "trim aligned")
    d.trim(base + 300 * KIB + 1, 10000)
    d.expect(base + 296 * KIB, 20 * KIB, "trim unaligned")
    d.zero(base + 400 * KIB, 64 * KIB)                       # may trim
    d.expect(base + 396 * KIB, 72 * KIB, "zero (may trim)")
    d.zero(base + 500 * KIB, 64 * KIB, nbd.CMD_FLAG_NO_HOLE)
    d.expect(base + 496 * KIB, 72 * KIB, "zero (no hole)")
    d.zero(base + 600 * KIB + 7, 9001)
    d.zero(base + 640 * KIB + 4095, 4098, nbd.CMD_FLAG_NO_HOLE)
    d.expect(base + 592 * KIB, 64 * KIB, "zero unaligned")
    d.zero(base + 700 * KIB, 32 * KIB, nbd.CMD_FLAG_FUA)
    d.expect(base + 696 * KIB, 40 * KIB, "zero with FUA")

    # Fast zero: either it is fast and zeroes, or it fails at once with
    # ENOTSUP and leaves the data alone. Nothing else.
    off, n = base + 800 * KIB, 64 * KIB
    try:
        d.h.zero(n, off, nbd.CMD_FLAG_FAST_ZERO)
    except nbd.Error as e:
        if e.errnum != errno.ENOTSUP:
            raise Failure(f"fast zero failed with {e}, expected success or ENOTSUP")
        print("fast zero: refused with ENOTSUP", file=sys.stderr)
        d.expect(off - BLOCK, n + 2 * BLOCK, "data after a refused fast zero")
    else:
        print("fast zero: done", file=sys.stderr)
        d.model[off:off + n] = bytes(n)
        d.expect(off - BLOCK, n + 2 * BLOCK, "fast zero")
    d.expect(base, 1 * MIB, "the whole trim/zero region")


def unaligned(d, rng):
    base = 3 * MIB
    cases = [(1, 1), (511, 2), (4095, 2), (4095, 4097), (8191, 8194),
             (12345, 12345), (BLOCK, 1), (2 * BLOCK - 1, 1), (100, 70000)]
    for off, n in cases:
        d.write(base + off, rand_bytes(rng, n))
        d.expect(base + off, n, f"unaligned write at +{off} len {n}")
    d.expect(base, 128 * KIB, "unaligned writes, whole range")
    for off, n in cases:
        d.expect(base + off + 1, n, f"unaligned read at +{off + 1} len {n}")

    # Random mix of overlapping commands inside one 256 KiB window, so that
    # partial blocks are read-modified-written over each other.
    for i in range(300):
        off = base + rng.randrange(256 * KIB)
        n = rng.randrange(1, 20000)
        op = rng.choice(["write", "write", "write_fua", "zero", "zero_nohole",
                         "trim", "read"])
        if op == "write":
            d.write(off, rand_bytes(rng, n))
        elif op == "write_fua":
            d.write(off, rand_bytes(rng, n), nbd.CMD_FLAG_FUA)
        elif op == "zero":
            d.zero(off, n)
        elif op == "zero_nohole":
            d.zero(off, n, nbd.CMD_FLAG_NO_HOLE)
        elif op == "trim":
            d.trim(off, n)
        else:
            d.expect(off, n, f"random op {i}: read")
    d.expect(base, 256 * KIB + 20000, "after random unaligned commands")


def cache(d):
    d.h.cache(1 * MIB, 0)
    d.h.cache(5000, 4095)
    d.expect(0, 1 * MIB + 8 * KIB, "data after cache commands")


def end_of_device(d, rng):
    size = d.size
    d.write(size - 1, b"\xa5")
    d.expect(size - 2, 2, "last byte")
    d.write(size - BLOCK, rand_bytes(rng, BLOCK))
    d.expect(size - 2 * BLOCK, 2 * BLOCK, "last 4 KiB")
    d.write(size - 5000, rand_bytes(rng, 5000), nbd.CMD_FLAG_FUA)
    d.expect(size - 8 * KIB, 8 * KIB, "last 5000 bytes")
    d.zero(size - 3000, 3000, nbd.CMD_FLAG_NO_HOLE)
    d.expect(size - 8 * KIB, 8 * KIB, "zero to the end")
    d.write(size - 100 * KIB, rand_bytes(rng, 100 * KIB))
    d.trim(size - 10000, 10000)
    d.expect(size - 100 * KIB, 100 * KIB, "trim to the end")


def out_of_range(d):
    size = d.size
    h = connect(d.uri, strict_bounds=False)
    attempts = [
        ("read past the end", lambda: h.pread(BLOCK, size - 100)),
        ("read at the end", lambda: h.pread(1, size)),
        ("write past the end", lambda: h.pwrite(b"x" * BLOCK, size - 100)),
        ("write at the end", lambda: h.pwrite(b"x", size)),
        ("zero past the end", lambda: h.zero(BLOCK, size - 100)),
        ("trim past the end", lambda: h.trim(BLOCK, size - 100)),
        ("read far away", lambda: h.pread(1, 1 << 60)),
    ]
    refusals = set()
    for what, attempt in attempts:
        try:
            attempt()
        except nbd.Error as e:
            refusals.add(e.errno)
        else:
            raise Failure(f"{what}: the server accepted it")
    print(f"out of range: {len(attempts)} requests refused with "
          f"{', '.join(sorted(map(str, refusals)))}", file=sys.stderr)
    d.expect(size - 8 * KIB, 8 * KIB, "the end after refused requests", h)
    h.shutdown()


def multi_conn(d, rng):
    """Four connections write interleaved disjoint chunks at once; one flush;
    a fifth connection reads them back."""
    hs = [connect(d.uri) for _ in range(4)]
    if not all(h.can_multi_conn() for h in hs):
        raise Failure("can_multi_conn is false on some connection")
    base, chunk = 4 * MIB, 64 * KIB
    cookies = []
    for j in range(48):
        h = hs[j % len(hs)]
        data = rand_bytes(rng, chunk - 1 - j)   # odd lengths: partial blocks
        off = base + j * chunk + j
        cookies.append((h, h.aio_pwrite(nbd.Buffer.from_bytearray(data), off)))
        d.model[off:off + len(data)] = data
    for h in hs:
        while h.aio_in_flight() > 0:
            h.poll(-1)
    for h, cookie in cookies:
        h.aio_command_completed(cookie)   # raises if that write failed
    hs[1].flush()
    reader = connect(d.uri)
    d.expect(base, 49 * chunk, "multi-conn writes read on another connection", reader)
    for h in hs + [reader]:
        h.shutdown()


def extents(h, off, n, flags=0):
    """Block status of [off, off+n): a list of (offset, length, flags)."""
    got = []

    def cb(meta, start, entries, err):
        if meta != nbd.CONTEXT_BASE_ALLOCATION:
            return
        pos = start
        for i in range(0, len(entries), 2):
            got.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]

    h.block_status(n, off, cb, flags)
    return got


def block_status(d):
    """The allocation a client sees: contiguous, holes read as zeroes,
    and trim_and_zero's aligned trim and may-trim zero are holes."""
    h = connect(d.uri, allocation=True)
    if not h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        raise Failure("base:allocation was not negotiated")
    pos, holes = 0, 0
    while pos < d.size:
        for off, n, flags in extents(h, pos, min(d.size - pos, 32 * MIB)):
            if off != pos or n == 0:
                raise Failure(f"block status: extent [{off}, +{n}) after {pos}")
            hole = nbd.STATE_HOLE | nbd.STATE_ZERO
            if flags & nbd.STATE_HOLE and flags & hole != hole:
                raise Failure(f"block status: a hole at [{off}, +{n}) that is not zero")
            if flags & nbd.STATE_ZERO:
                holes += 1
                if any(d.model[off:off + n]):
                    raise Failure(f"block status: [{off}, +{n}) reported zero, "
                                  f"but the model has data there")
            pos = off + n
    for off, n, what in [(1 * MIB, 256 * KIB, "trim"),
                         (1 * MIB + 400 * KIB, 64 * KIB, "zero (may trim)")]:
        first = extents(h, off, n, nbd.CMD_FLAG_REQ_ONE)[0]
        if first[0] != off or first[1] < n or not first[2] & nbd.STATE_HOLE:
            raise Failure(f"block status after {what} of [{off}, +{n}): {first}, "
                          f"expected a hole")
    print(f"block status: {holes} zero extents, each zero in the model", file=sys.stderr)
    h.shutdown()


def final_check(d, path):
    d.h.flush()
    d.expect(0, d.size, "whole device at the end")
    with open(path, "rb") as f:
        on_disk = f.read()
    if on_disk != d.model:
        i = next(i for i in range(d.size) if on_disk[i] != d.model[i])
        raise Failure(f"backing file differs from the model first at byte {i}")


def main():
    uri, path = sys.argv[1:3]
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"semantics.py: seed {seed} (SEED={seed} to repeat)", file=sys.stderr)
    rng = random.Random(seed)
    d = Disk(uri, path)
    if d.size < 6 * MIB:
        raise Failure("the disk must be at least 6 MiB")
    basic(d, rng)
    trim_and_zero(d, rng)
    unaligned(d, rng)
    cache(d)
    end_of_device(d, rng)
    out_of_range(d)
    multi_conn(d, rng)
    block_status(d)
    final_check(d, path)
    d.h.shutdown()


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
