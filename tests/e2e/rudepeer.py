#!/usr/bin/python3
"""A peer that is alive but does not cooperate: what the node does about it.

Usage: rudepeer.py PORT SIZE NODE_LOG HACTL CTL_SOCKET NODE_PID SCENARIO

Run by t0258-replication-rude-peer.sh against a real node alpha, Secondary,
listening on 127.0.0.1:PORT with TLS off and a ping timeout of PING_MS
(environment, default 1000). This program connects as its peer bravo,
passes the handshake, and then, as SCENARIO says:

  mute     sends PROMOTE requests without end and never reads a byte: the
           node must not queue answers without bound (it must stop reading
           long before FLOOD_LIMIT, and its resident memory may grow by
           MEM_LIMIT_MB at most) and must drop us within a few
           ping timeouts, with a line saying we do not read its answers;
  promote  (we are a Secondary too) answers the node's PINGs but never its
           PROMOTE: `hactl promote --force` must be refused within the
           ping timeout and a bit, not hold the control socket for the
           request timeout; `hactl status` answers meanwhile within that
           bound; the node logs that we answer pings but not its promotion
           request, and drops the link;
  stall    (we are the Primary) sends more FLUSHes than the node applies at
           once to a disk that hangs on them (alpha runs with
           -D hablock.stall_flush_ms), answering PINGs all along: when the
           node drops us it must say that its own disk held up our
           requests, never that we stopped answering.

After each, the node must still answer `hactl status` and wait for its peer
again. Exit 0 when every oracle held, 1 naming what failed.
"""
import os
import select
import socket
import subprocess
import sys
import threading
import time

from peerfuzz import (FLUSH, HELLO, INCONSISTENT, PRIMARY, PROMOTE, SECONDARY,
                      Failure, Link, Node, header, hello_payload, run_script)

PING_MS = int(os.environ.get("PING_MS", "1000"))
# growth of the node's RSS we allow (MEM_LIMIT_MB, default 64; more under
# ASan, whose quarantine keeps freed memory resident)
MEM_LIMIT = int(os.environ.get("MEM_LIMIT_MB", "64")) << 20
FLOOD_LIMIT = 48 << 20        # bytes of requests we try to send


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise Failure(f"no VmRSS for pid {pid}")


class RudePeer:
    def __init__(self, args):
        (port, size, log, hactl, ctl, pid, self.scenario) = args
        self.port, self.size, self.pid = int(port), int(size), int(pid)
        self.hactl, self.ctl = hactl, ctl
        self.node = Node(log, hactl, ctl)

    def open(self, role, disk):
        end = time.monotonic() + 10
        while True:
            link = Link(self.port)
            if link.wait_frame(HELLO, "its HELLO"):
                break
            link.close()
            if time.monotonic() > end:
                raise Failure("the node closed every connection before its HELLO")
            time.sleep(0.05)
        link.send(header(HELLO, plen=192) + hello_payload(role, disk, self.size))
        end = time.monotonic() + 10
        while self.node.status()["connection"] != "Connected":
            if time.monotonic() > end:
                raise Failure("the node did not take us as its peer")
            link.pump(0.05)
        return link

    def run(self):
        self.node.set_mark()
        getattr(self, "scenario_" + self.scenario)()
        self.node.await_peer_again()
        print(f"rudepeer: ok: {self.scenario}")

    # ---- mute: we send, we never read ---------------------------------------

    def scenario_mute(self):
        link = self.open(SECONDARY, INCONSISTENT)
        s = link.s
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        chunk = b"".join(header(PROMOTE, rid=1000 + i) for i in range(1024))
        before = peak = rss(self.pid)
        sent, dropped = 0, None
        last = time.monotonic()
        view = memoryview(b"")
        while sent < FLOOD_LIMIT:
            if not view:
                view = memoryview(chunk)
            try:
                n = s.send(view)
                view = view[n:]
                sent += n
                last = time.monotonic()
            except BlockingIOError:
                select.select([], [s], [], 0.1)
            except OSError as e:
                dropped = e
                break
            peak = max(peak, rss(self.pid))
            if time.monotonic() - last > 5 * PING_MS / 1000 + 5:
                raise Failure(f"the node neither read our requests nor dropped us "
                              f"for {time.monotonic() - last:.1f} s "
                              f"({sent >> 20} MiB sent)")
        peak = max(peak, rss(self.pid))
        grew = peak - before
        print(f"rudepeer: mute: {sent / (1 << 20):.1f} MiB of PROMOTE sent "
              f"unread, the node's RSS grew by {grew / (1 << 20):.1f} MiB, "
              f"{'dropped: ' + str(dropped) if dropped else 'not dropped'}")
        if grew > MEM_LIMIT:
            raise Failure(f"the node's RSS grew by {grew >> 20} MiB while we "
                          f"read none of its answers (limit {MEM_LIMIT >> 20})")
        if not dropped:
            raise Failure(f"the node read all {sent >> 20} MiB of our requests "
                          f"although we read none of its answers")
        self.node.wait_logged(r"the peer has not read our answers for \d+ ms "
                              r"\(\d+ waiting\), so we stopped reading from it",
                              "a peer that does not read")
        link.close()

    # ---- promote: pings answered, PROMOTE not ---------------------------------

    def scenario_promote(self):
        link = self.open(SECONDARY, INCONSISTENT)
        stop = threading.Event()

        def pump():               # answers PINGs; PROMOTE lands in frames
            while not stop.is_set() and not link.eof:
                link.pump(0.02)
        t = threading.Thread(target=pump)
        t.start()
        bound = PING_MS / 1000 + 2.0
        try:
            t0 = time.monotonic()
            promote = subprocess.Popen([self.hactl, "--socket", self.ctl,
                                        "promote", "--force"],
                                       stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            time.sleep(0.2)
            t1 = time.monotonic()
            st = subprocess.run([self.hactl, "--socket", self.ctl, "status"],
                                capture_output=True, text=True, timeout=60)
            t_status = time.monotonic() - t1
            out, err = promote.communicate(timeout=60)
            t_promote = time.monotonic() - t0
        finally:
            stop.set()
            t.join()
        print(f"rudepeer: promote: refused after {t_promote:.2f} s "
              f"(status {promote.returncode}: {err.strip()}); a status "
              f"meanwhile took {t_status:.2f} s")
        if promote.returncode != 3:
            raise Failure(f"hactl promote exited {promote.returncode}, "
                          f"expected 3 (refused): {out.strip()} {err.strip()}")
        if "did not answer the promotion request" not in err:
            raise Failure(f"hactl promote's refusal does not say why: {err.strip()}")
        if t_promote > bound:
            raise Failure(f"the refusal took {t_promote:.1f} s (bound {bound:.1f} s)")
        if st.returncode != 0 or t_status > bound:
            raise Failure(f"hactl status during the promotion: exit "
                          f"{st.returncode} after {t_status:.1f} s (bound "
                          f"{bound:.1f} s)")
        if not any(fr[0] == PROMOTE for fr in link.frames):
            raise Failure("the node sent no PROMOTE request")
        self.node.wait_logged(r"the peer answers pings but not our promotion "
                              r"request \(\d+ ms\); dropping the link",
                              "an unanswered PROMOTE")
        link.wait_eof("its promotion request went unanswered")
        role = self.node.status()["role"]
        if role != "Secondary":
            raise Failure(f"the node is {role} after a refused promotion")
        link.close()

    # ---- stall: the node's disk holds our FLUSHes --------------------------------

    def scenario_stall(self):
        link = self.open(PRIMARY, INCONSISTENT)
        link.send(b"".join(header(FLUSH, rid=10 + i) for i in range(80)))
        t0 = time.monotonic()
        link.wait_eof("80 FLUSHes to a disk that hangs", limit=60)
        print(f"rudepeer: stall: dropped after {time.monotonic() - t0:.1f} s")
        line = self.node.wait_logged(r"dropping the link|ping timeout|no answer",
                                     "the dropped link")
        if "our disk has not finished the peer's earlier requests" not in line:
            raise Failure(f"the node blamed us for its own disk: {line}")
        link.close()


def main():
    return run_script("rudepeer", __doc__.splitlines()[2], (7,), RudePeer)


if __name__ == "__main__":
    sys.exit(main())
