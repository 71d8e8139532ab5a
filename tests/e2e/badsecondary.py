#!/usr/bin/python3
"""A Secondary that fails the Primary under load: what the Primary records.

Usage: badsecondary.py PORT SIZE URI NODE_LOG HACTL CTL_SOCKET DISK POLICY SEED

Run by t0257-replication-bad-secondary.sh. The node alpha is Primary,
promoted alone with nothing out of sync; this program connects to it as its
Secondary bravo (TLS off) and answers its requests, while a child process
(this script with --client) writes through alpha with three NBD
connections: 4 KiB-aligned writes and zeroes of 4-64 KiB, each to a range
no other request touches, and a flush after every eighth. After ACKing a random
number of requests, the Secondary misbehaves as POLICY says, and from then
on answers nothing but PINGs:

  ack         nothing goes wrong: every request is ACKed to the end
  late        every request answered, in reverse order of arrival
  nack        a WRITE or ZERO answered NACK (EIO): the peer failed it
  nack-flush  a FLUSH answered NACK (EIO)
  nack-enotconn  a WRITE or ZERO answered NACK with ENOTCONN (what a disk
              on a FUSE file system whose daemon died says): a failure like
              any other, never taken for alpha's own "the link dropped it"
  silent      a request never answered: the request timeout must drop us
  stray-ack   an ACK for an id alpha never sent: the link must drop
  double-ack  a request ACKed twice (the second is a stray)
  cut         the connection closed (our side shut down for writing, then
              read to the end: a close with unread data would be a reset,
              which may reach alpha before the ACKs we sent)

The oracles (DESIGN.md invariants 1 and 2):
- every write, zero and flush of the clients succeeds: alpha completes
  them alone once the peer has failed;
- alpha's disk holds exactly what the clients wrote;
- out_of_sync_bytes is exactly the bytes of every change we did not ACK
  (the ACKs we sent before misbehaving reach alpha before the misbehaviour,
  on the same stream, and nothing is ACKed after): the blocks the Secondary
  may lack are all marked, and nothing else is; except after a failed
  FLUSH, when the whole device is (the peer may lack any write it had
  acknowledged before);
- with `ack` and `late`, nothing is out of sync and the link is still up;
  otherwise alpha logs why it dropped the link, in its own words for each
  policy, and waits as it should: StandAlone (the peer excluded until
  `hactl connect`) after a failed request or a request timeout, Connecting
  after a broken or lost link; a NACK is never mistaken for a timeout.

Exit 0 when every oracle held, 1 naming what failed.
"""
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time

from peerfuzz import (ACK, DEADLINE, FLUSH, HELLO, NACK, SECONDARY, UPTODATE,
                      WRITE, ZERO, Failure, Link, Node, header, hello_payload,
                      run_script)

BLOCK = 4096
SLOT = 64 << 10
CLIENTS, OPS = 3, 40
EIO = 5
ENOTCONN = 107


def client_main(uri, size, seed, out):
    """The NBD clients: each writes its own slots; all ops to a JSON file."""
    import nbd
    slots = list(range(size // SLOT))
    random.Random(seed).shuffle(slots)
    per = len(slots) // CLIENTS
    ops, errors = [], []

    def run(k):
        rng = random.Random(seed * 10 + k)
        h = nbd.NBD()
        h.set_handle_name(f"client{k}")
        h.connect_uri(uri)
        try:
            for i, slot in enumerate(slots[k * per:k * per + OPS]):
                n = rng.randint(1, SLOT // BLOCK) * BLOCK
                off = slot * SLOT
                if rng.random() < 0.25:
                    h.zero(n, off)
                    ops.append(("zero", off, n, None))
                else:
                    data = rng.randbytes(n)
                    h.pwrite(data, off)
                    ops.append(("write", off, n, data.hex()))
                if i % 8 == 7:
                    h.flush()
        except nbd.Error as e:
            errors.append(f"client {k}: {e}")
        finally:
            h.shutdown()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(out, "w") as f:
        json.dump({"ops": ops, "errors": errors}, f)
    return 1 if errors else 0


class BadSecondary:
    def __init__(self, args):
        (port, size, self.uri, log, hactl, ctl, self.disk, self.policy,
         seed) = args
        self.port, self.size, self.seed = int(port), int(size), int(seed)
        self.node = Node(log, hactl, ctl)
        self.rng = random.Random(self.seed)
        self.acked = []           # (offset, count) of WRITE/ZERO we ACKed
        self.misbehaved = False
        self.held = []            # `late`: requests not answered yet

    def answer(self, link, fr, ok=True, err=EIO):
        ftype, _, count, rid, off, _ = fr
        if ok:
            link.send(header(ACK, rid=rid))
            if ftype in (WRITE, ZERO):
                self.acked.append((off, count))
        else:
            link.send(header(NACK, rid=rid, plen=8) + struct.pack("<II", err, 0))

    def misbehave(self, link, fr):
        """The one wrong answer; afterwards only PINGs are answered."""
        self.misbehaved = True
        p = self.policy
        if p in ("nack", "nack-flush"):
            self.answer(link, fr, ok=False)
        elif p == "nack-enotconn":
            self.answer(link, fr, ok=False, err=ENOTCONN)
        elif p == "stray-ack":
            link.send(header(ACK, rid=fr[3] + (1 << 40)))
        elif p == "double-ack":
            self.answer(link, fr)
            link.send(header(ACK, rid=fr[3]))
        elif p == "cut":
            link.answer_pings = False
            link.pongs = []
            link.s.shutdown(socket.SHUT_WR)
        # silent: nothing, ever

    def serve(self, link, stop):
        """Answer alpha's requests until the clients are done."""
        wanted = {"nack": (WRITE, ZERO), "nack-enotconn": (WRITE, ZERO),
                  "nack-flush": (FLUSH,)}.get(
            self.policy, (WRITE, ZERO, FLUSH))
        budget = self.rng.randint(0, 3) if self.policy == "nack-flush" \
            else self.rng.randint(1, CLIENTS * OPS // 2)
        while not stop.is_set() and not link.eof:
            link.pump(0.02)
            while link.frames and not link.eof:
                fr = link.frames.pop(0)
                ftype = fr[0]
                if ftype not in (WRITE, ZERO, FLUSH):
                    continue          # PINGs are answered by Link itself
                if self.misbehaved:
                    continue
                if ftype in wanted:
                    if self.policy not in ("ack", "late") and budget <= 0:
                        self.misbehave(link, fr)
                        continue
                    budget -= 1
                if self.policy == "late":
                    self.held.append(fr)
                    if len(self.held) >= 3:
                        self.answer_held(link)
                else:
                    self.answer(link, fr)
            self.answer_held(link)        # nothing more came with them

    def answer_held(self, link):
        for h in reversed(self.held):
            self.answer(link, h)
        self.held = []

    def run(self):
        link = Link(self.port)
        if not link.wait_frame(HELLO, "its HELLO"):
            raise Failure("alpha closed the connection before its HELLO")
        link.send(header(HELLO, plen=192) +
                  hello_payload(SECONDARY, UPTODATE, self.size))
        end = time.monotonic() + DEADLINE
        while self.node.status()["connection"] != "Connected":
            if time.monotonic() > end:
                raise Failure("alpha did not take us as its Secondary")
            link.pump(0.05)
        self.node.set_mark()
        out = self.disk + ".ops.json"
        child = subprocess.Popen([sys.executable, __file__, "--client",
                                  self.uri, str(self.size), str(self.seed),
                                  out])
        stop = threading.Event()
        waiter = threading.Thread(target=lambda: (child.wait(), stop.set()))
        waiter.start()
        try:
            self.serve(link, stop)
            # Read (and answer PINGs) to the end, unless the link is gone.
            while not stop.is_set():
                if link.eof:
                    stop.wait(0.05)
                else:
                    link.pump(0.05)
        finally:
            waiter.join(timeout=120)
            if child.poll() is None:
                child.kill()
                raise Failure("the clients did not finish within 120 s")
        with open(out) as f:
            result = json.load(f)
        if result["errors"] or child.returncode:
            raise Failure(f"a client request failed: {result['errors']}")
        try:                           # the status first: then we leave
            self.check(result["ops"], not link.eof)
        finally:
            link.close()

    def check(self, ops, link_up):
        st = self.node.status()       # first: while we still answer PINGs
        with open(self.disk, "rb") as f:
            model = f.read()
        expected = bytearray(len(model))   # the disk started zero-filled
        changed = set()
        for kind, off, n, data in ops:
            expected[off:off + n] = bytes.fromhex(data) if data else bytes(n)
            changed.update(range(off // BLOCK, (off + n) // BLOCK))
        if model != expected:
            first = next(i for i in range(len(model)) if model[i] != expected[i])
            raise Failure(f"alpha's disk differs from what the clients wrote, "
                          f"first at byte {first}")
        acked = set()
        for off, n in self.acked:
            acked.update(range(off // BLOCK, (off + n) // BLOCK))
        if not acked <= changed:
            raise Failure("we ACKed requests no client made")
        want = len(changed - acked) * BLOCK
        if self.policy == "nack-flush":
            want = self.size
        got = st["out_of_sync_bytes"]
        if got != want:
            raise Failure(f"out_of_sync_bytes is {got}, expected {want}: "
                          f"{len(changed)} blocks written, {len(acked)} ACKed "
                          f"by us (policy {self.policy})")
        if self.policy in ("ack", "late"):
            if want or not link_up or st["connection"] != "Connected":
                raise Failure(f"nothing went wrong, yet connection "
                              f"{st['connection']}, {want} bytes out of sync")
            why = "still connected"
        else:
            pattern, conn = {
                "nack": (r"r0: the peer failed (WRITE|ZERO) at \d+ "
                         r"\(Input/output error\): its disk is failing; "
                         r"going on alone", "StandAlone"),
                "nack-enotconn": (r"r0: the peer failed (WRITE|ZERO) at \d+ "
                                  r"\(Input/output error\): its disk is "
                                  r"failing; going on alone", "StandAlone"),
                "nack-flush": (r"r0: the peer failed a flush \(Input/output "
                               r"error\): its disk is failing; going on alone",
                               "StandAlone"),
                "silent": (r"peer bravo: (WRITE|ZERO|FLUSH) at \d+ not "
                           r"answered within 1000 ms \(request timeout\)",
                           "StandAlone"),
                "stray-ack": (r"peer bravo: ACK for unknown request id \d+",
                              "Connecting"),
                "double-ack": (r"peer bravo: ACK for unknown request id \d+",
                               "Connecting"),
                "cut": (r"peer bravo: peer closed the connection",
                        "Connecting"),
            }[self.policy]
            why = self.node.wait_logged(pattern, f"policy {self.policy}",
                                        prefix=None)
            if st["connection"] != conn:
                raise Failure(f"connection {st['connection']} after policy "
                              f"{self.policy}, expected {conn}")
            if self.policy.startswith("nack") and \
                    "request timeout" in self.node.logged():
                raise Failure("a NACK was taken for a request timeout")
        print(f"badsecondary: ok: {self.policy}: {len(ops)} client requests, "
              f"{len(acked)} of {len(changed)} blocks ACKed, {got} bytes out "
              f"of sync as expected; {why.strip()}")


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--client":
        return client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                           sys.argv[5])
    return run_script("badsecondary", __doc__.splitlines()[2], (9,),
                      BadSecondary)


if __name__ == "__main__":
    sys.exit(main())
