#!/usr/bin/env python3
"""The measuring half of scripts/bench-node.sh (see there); one phase per run, appending
its rows to $BENCH_DIR/table. Talks HTTP/1.1 by hand over the admin socket and over pods'
@nes (entered with setns on the calling thread)."""

import concurrent.futures as cf
import ctypes
import json
import os
import socket
import sys
import threading
import time

DIR, TAG = os.environ["BENCH_DIR"], os.environ["BENCH_TAG"]
N, ATTACK = int(os.environ["BENCH_N"]), int(os.environ["BENCH_ATTACK"])
PID = int(os.environ["BENCH_AGENT_PID"])
ADMIN = f"{DIR}/admin.sock"
SPEC = json.dumps({"interfaces": [
    {"name": "br0", "type": "bridge", "addresses": ["192.168.50.1/24", "fd00:50::1/64"]}]})
LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
DEADLINE = 120


def row(what, value):
    line = f"| {what} | {value} |"
    with open(f"{DIR}/table", "a") as f:
        f.write(line + "\n")


def exchange(sock, method, uri, body=""):
    head = f"{method} {uri} HTTP/1.1\r\nhost: nes\r\nconnection: close\r\n"
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    sock.sendall((head + "\r\n" + body).encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def admin(method, uri, body=""):
    s = socket.socket(socket.AF_UNIX)
    s.connect(ADMIN)
    return exchange(s, method, uri, body)


def pod_socket(i):
    """A connection to pod i's @nes, made inside its namespace."""
    fd = os.open(f"/var/run/netns/{TAG}-{i}", os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        s = socket.socket(socket.AF_UNIX)
        s.connect("\0nes")
        return s
    finally:
        os.close(fd)


def until(cond, what):
    end = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"bench: {what} not within {DEADLINE} s")
        time.sleep(0.02)


def bound(i):
    try:
        return exchange(pod_socket(i), "GET", "/healthz")[0] == 200
    except OSError:
        return False


def applied(i, fresh=False):
    try:
        code, body = admin("GET", f"/v1/self/status?pod=pod{i}")
    except OSError:
        return False
    if code != 200:
        return False
    st = json.loads(body)
    ok = any(c["type"] == "Applied" and c["status"] == "True" for c in st.get("conditions", []))
    if fresh:  # the namespace the agent reads is the new one
        ok = ok and st["netns"]["inode"] == os.stat(f"/var/run/netns/{TAG}-{i}").st_ino
    return ok


def all_of(check, **kw):
    with cf.ThreadPoolExecutor(32) as pool:
        pending = set(range(N))
        while pending:
            done = {i for i, ok in zip(pending, pool.map(lambda i: check(i, **kw), pending)) if ok}
            pending -= done
            if pending:
                time.sleep(0.05)


def timed(what, f):
    t0 = time.monotonic()
    t = threading.Thread(target=f, daemon=True)
    t.start()
    t.join(DEADLINE)
    if t.is_alive():
        sys.exit(f"bench: {what} not within {DEADLINE} s")
    return time.monotonic() - t0


def proc():
    status = dict(l.split(":", 1) for l in open(f"/proc/{PID}/status"))
    rss = int(status["VmRSS"].split()[0]) / 1024
    return rss, int(status["Threads"]), len(os.listdir(f"/proc/{PID}/fd"))


def rss_split():
    """RSS in anonymous memory (heap, stacks: what the agent allocates) and in file pages
    (its own binary's text, shared with every other mapping of it)."""
    status = dict(l.split(":", 1) for l in open(f"/proc/{PID}/status"))
    return tuple(int(status[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile"))


def resources(when):
    rss, threads, fds = proc()
    anon, file = rss_split()
    row(f"agent RSS (anon + file) / threads / fds, {when}",
        f"{rss:.1f} MiB ({anon:.1f} + {file:.1f}) / {threads} / {fds}")


def configure(i):
    code, body = admin("PUT", f"/v1/self/config?pod=pod{i}&manager=bench", SPEC)
    assert code == 200, body


def since_start():
    return time.time() - float(os.environ["BENCH_T0"])


def first():
    all_of(bound)
    row(f"pods ({N}): time to bind all (from the agent's start)", f"{since_start():.2f} s")
    resources("all served")

    def configure_all():
        with cf.ThreadPoolExecutor(32) as pool:
            list(pool.map(configure, range(N)))
        all_of(applied)
    row("time to configure all (parallel PUT until Applied)", f"{timed('configure', configure_all):.2f} s")
    resources("all served and configured")


def restart():
    all_of(bound)
    row("restart: time to re-bind all (from the new agent's start)", f"{since_start():.2f} s")
    resources("after the restart")


def reboot():
    all_of(applied, fresh=True)
    row("node reboot: from replacing every netns until all re-applied", f"{since_start():.2f} s")


def stall(sock):
    head = ("PUT /v1/self/config?manager=x HTTP/1.1\r\nhost: nes\r\n"
            "content-type: application/json\r\ncontent-length: 1048576\r\n\r\n")
    try:
        sock.sendall(head.encode() + b" " * (1048576 - 1))
    except OSError:
        pass


def is_open(sock):
    """Whether the agent still holds the connection (no end of stream after its answer)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack():
    socks = []
    for _ in range(ATTACK):
        try:
            socks.append(pod_socket(0))
        except OSError:
            break
    senders = [threading.Thread(target=stall, args=(s,), daemon=True) for s in socks]
    for t in senders:
        t.start()
    peak, lat = 0.0, []
    end = time.monotonic() + 10
    while time.monotonic() < end:
        t0 = time.monotonic()
        code, _ = exchange(pod_socket(1), "GET", "/v1/self/status")
        lat.append((time.monotonic() - t0) * 1000)
        assert code == 200
        peak = max(peak, proc()[0])
    lat.sort()
    still_open = sum(is_open(s) for s in socks)
    row(f"{len(socks)} stalled 1 MiB bodies on one pod: peak RSS over 10 s", f"{peak:.1f} MiB")
    row("  their connections still open after 10 s", still_open)
    row("  status of another pod meanwhile: p50 / p99",
        f"{lat[len(lat) // 2]:.2f} / {lat[int(len(lat) * 0.99)]:.2f} ms ({len(lat)} reads)")
    for s in socks:
        s.close()


globals()[sys.argv[1]]()
