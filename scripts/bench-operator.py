#!/usr/bin/env python3
"""The measuring half of scripts/bench-operator.sh (see there).

    bench-operator.py measure     waits for the operator, runs every attack, writes the table
    bench-operator.py attack ...  one attack, run as its own process (its memory and CPU are
                                  not the measurer's): prints what became of its connections

The attack: N clients each open a connection (TLS for the HTTPS port), send a request head
declaring a large body, then part of it (`stalled`) or all of it as fast as they can
(`fast`), read whatever comes back, and reconnect as soon as the operator answers or closes,
until the attack's time is up. The healthy requests timed meanwhile come from another
address (127.0.0.2)."""

import asyncio
import http.client
import itertools
import json
import os
import ssl
import subprocess
import sys
import threading
import time

MIB = 1 << 20
SERIAL = itertools.count()
# The healthy clients' address: not the attack's (127.0.0.1), as the kubelet, the API server
# and nescli are not the pod that floods the operator (both are the loopback).
HEALTHY = ("127.0.0.2", 0)


def unverified():
    """TLS without verification: the bench measures the operator, not its certificate. One
    context for every connection (making one loads the system's CA store: milliseconds)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


TLS = unverified()


# === the attacker ===

async def one(port, tls, head, body, stall, end, times):
    """One connection: what became of it. Records in `times` how long the operator took to
    answer it (first byte) and to close it."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=TLS if tls else None),
            max(0.01, end - t0))
    except asyncio.TimeoutError:
        return "connecting at the end"
    except (OSError, ssl.SSLError):
        times["closed"].append(time.monotonic() - t0)
        return "refused or closed during the TLS handshake"
    # Each connection its own token, when the head has one: no cache answers for the attack.
    head = head.replace(b"{n}", str(next(SERIAL)).encode())
    writer.write(head + (body if not stall else body[: len(body) // 3]))
    first, outcome = b"", None
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), max(0.01, end - time.monotonic())):
            if not first:
                first = chunk
                times["answered"].append(time.monotonic() - t0)
    except asyncio.TimeoutError:
        outcome = "still open at the end"
    except (OSError, ssl.SSLError):
        pass
    writer.transport.abort()
    if outcome is None:
        times["closed"].append(time.monotonic() - t0)
        if first.startswith(b"HTTP/1.1 "):
            outcome = f"answered {first[9:12].decode(errors='replace')}"
        else:
            outcome = "closed unanswered"
    return outcome


async def client(port, tls, head, body, stall, end, outcomes, times):
    while time.monotonic() < end:
        outcome = await one(port, tls, head, body, stall, end, times)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1


def spread(times):
    """p50 / p99 / max of `times`, in seconds."""
    times = sorted(times)
    if not times:
        return "none"
    pick = lambda q: times[min(len(times) - 1, int(len(times) * q))]  # noqa: E731
    return f"{pick(0.5):.2f} / {pick(0.99):.2f} / {times[-1]:.2f} s"


async def attack_main(port, tls, head, body, stall, clients, seconds):
    outcomes, times = {}, {"answered": [], "closed": []}
    end = time.monotonic() + seconds
    await asyncio.gather(*(client(port, tls, head, body, stall, end, outcomes, times)
                           for _ in range(clients)))
    return outcomes, {k: spread(v) for k, v in times.items()}


def attack(out, port, tls, method, path, declared, stall, clients, seconds, headers):
    """Writes to `out` the outcomes of every connection and the times to answer and close."""
    body = b"{" + b" " * (declared - 2) + b"}"
    head = (f"{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"content-length: {declared}\r\n{headers}\r\n").encode()
    outcomes, times = asyncio.run(attack_main(port, tls, head, body, stall, clients, seconds))
    with open(out, "w") as f:
        json.dump({"outcomes": outcomes, "times": times}, f)


# === the measurer ===

class Operator:
    def __init__(self):
        env = os.environ
        self.dir, self.pid = env["BENCH_DIR"], int(env["BENCH_OPERATOR_PID"])
        self.https, self.probes = int(env["BENCH_HTTPS"]), int(env["BENCH_PROBES"])
        self.api, self.token = int(env["BENCH_API"]), env["BENCH_TOKEN"]
        self.clients, self.seconds = int(env["BENCH_N"]), int(env["BENCH_SECONDS"])
        self.body = int(env["BENCH_BODY"])

    def proc(self):
        status = dict(l.split(":", 1) for l in open(f"/proc/{self.pid}/status"))
        return int(status["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{self.pid}/fd"))

    def authenticated(self):
        """An authenticated, authorised request on a new TLS connection (as nescli makes
        one): its status and seconds."""
        return timed_get(
            http.client.HTTPSConnection("127.0.0.1", self.https, timeout=10, context=TLS,
                                        source_address=HEALTHY),
            "/v1/namespaces/default/networkcares", {"authorization": f"Bearer {self.token}"})

    def healthz(self, path="/healthz"):
        return timed_get(http.client.HTTPConnection("127.0.0.1", self.probes, timeout=10,
                                                    source_address=HEALTHY), path)

    def reviews(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.api, timeout=10)
        conn.request("GET", "/bench/reviews")
        return json.loads(conn.getresponse().read())


def timed_get(conn, path, headers=None):
    """GET `path` on a new connection: its status (0: no answer) and seconds."""
    t0 = time.monotonic()
    try:
        conn.request("GET", path, headers=headers or {})
        code = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        code = 0
    finally:
        conn.close()
    return code, time.monotonic() - t0


def row(o, what, value):
    with open(f"{o.dir}/table", "a") as f:
        f.write(f"| {what} | {value} |\n")


def until(what, cond, deadline=120):
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"bench: {what} not within {deadline} s")
        time.sleep(0.1)


def latency(samples):
    """p50 / p99 / max in ms of the answered ones, and how many were not 200."""
    ok = sorted(t * 1000 for code, t in samples if code == 200)
    bad = {}
    for code, _ in samples:
        if code != 200:
            bad[code or "no answer"] = bad.get(code or "no answer", 0) + 1
    failed = ", ".join(f"{n} × {c}" for c, n in bad.items()) or "none"
    if not ok:
        return f"none answered 200 of {len(samples)} (failed: {failed})"
    pick = lambda q: ok[min(len(ok) - 1, int(len(ok) * q))]  # noqa: E731
    return (f"{pick(0.5):.1f} / {pick(0.99):.1f} / {ok[-1]:.1f} ms "
            f"({len(samples)} requests; not 200: {failed})")


def scenario(o, name, port, tls, method, path, declared, stall, headers=""):
    """Runs one attack while sampling RSS and asking the operator healthy questions."""
    rss_before, fds_before = o.proc()
    reviews_before = o.reviews()["tokenreviews"]
    peak, health, probes = [rss_before], [], []
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(o.proc()[0])
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = f"{o.dir}/attack.json"
    cmd = [sys.executable, __file__, "attack", out, str(port), str(int(tls)), method, path,
           str(declared), str(int(stall)), str(o.clients), str(o.seconds), headers]
    attacker = subprocess.Popen(cmd)
    time.sleep(1)  # let the attack build up before asking (not a synchronisation)
    while attacker.poll() is None:
        health.append(o.authenticated())
        probes.append(o.healthz())
        time.sleep(0.1)
    if attacker.returncode != 0:
        sys.exit(f"bench: the attacker failed ({attacker.returncode})")
    with open(out) as f:
        result = json.load(f)
    done.set()
    sampler.join()
    # After: the attacker has closed every connection; wait for the operator to see it.
    until("the operator closing the attack's connections", lambda: o.proc()[1] <= fds_before + 2)
    rss_after = o.proc()[0]
    outcomes, times = result["outcomes"], result["times"]
    total = sum(outcomes.values())
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))
    row(o, f"**{name}**: peak RSS during {o.seconds} s of {o.clients} clients",
        f"**{max(peak):.1f} MiB** (before {rss_before:.1f})")
    row(o, "  their connections", f"{total}: {kinds}")
    row(o, "  time from connecting until the operator answered: p50 / p99 / max", times["answered"])
    row(o, "  time from connecting until the operator closed: p50 / p99 / max", times["closed"])
    row(o, "  TokenReviews the attack caused", o.reviews()["tokenreviews"] - reviews_before)
    row(o, "  authenticated GET (new TLS connection) meanwhile: p50 / p99 / max", latency(health))
    row(o, "  probe /healthz meanwhile: p50 / p99 / max", latency(probes))
    row(o, "  RSS after (every attack connection gone)", f"{rss_after:.1f} MiB")
    return max(peak), health, probes


def measure():
    o = Operator()
    until("the operator ready (/readyz 200)", lambda: o.healthz("/readyz")[0] == 200)
    until("an authenticated request answered 200", lambda: o.authenticated()[0] == 200)
    health, probes = [], []
    for _ in range(50):  # also warms the review cache, TLS, the allocator's first arenas
        health.append(o.authenticated())
        probes.append(o.healthz())
    rss, fds = o.proc()
    row(o, "operator RSS / fds, idle (ready, served 100 requests)", f"{rss:.1f} MiB / {fds}")
    row(o, "authenticated GET (new TLS connection), idle: p50 / p99 / max", latency(health))
    row(o, "probe /healthz, idle: p50 / p99 / max", latency(probes))
    body, mib = o.body, f"{o.body / MIB:g} MiB"
    limit = 1 * MIB
    bogus = "authorization: Bearer not-a-token-{n}\r\n"
    scenarios = [
        (f"/mutate-pods, Content-Length {mib}, a third sent, then stalled",
         o.https, True, "POST", "/mutate-pods", body, True),
        (f"/mutate-pods, Content-Length {mib} sent fast",
         o.https, True, "POST", "/mutate-pods", body, False),
        ("/mutate-pods, Content-Length 1 MiB (the webhook's limit), a third sent, then stalled",
         o.https, True, "POST", "/mutate-pods", limit, True),
        (f"cliserver PUT config, a new bad token each, Content-Length {mib}, a third sent, stalled",
         o.https, True, "PUT", "/v1/namespaces/default/pods/p/config", body, True, bogus),
        (f"cliserver PUT config, a new bad token each, Content-Length {mib} sent fast",
         o.https, True, "PUT", "/v1/namespaces/default/pods/p/config", body, False, bogus),
        (f"probe port POST /healthz, Content-Length {mib}, a third sent, then stalled",
         o.probes, False, "POST", "/healthz", body, True),
    ]
    peaks, health = [], []
    for s in scenarios:
        peak, h, p = scenario(o, *s)
        peaks.append(peak)
        health += h + p
    answered = sum(code == 200 for code, _ in health)
    worst = max(peaks)
    row(o, "**goal: RSS under 96 MiB during every attack**",
        f"**{'met' if worst < 96 else 'NOT met'}** (highest peak {worst:.1f} MiB)")
    row(o, "**healthy requests answered 200 during the attacks**",
        f"**{answered} of {len(health)}**")


if sys.argv[1] == "attack":
    out, port, tls, method, path, declared, stall, clients, seconds, headers = sys.argv[2:12]
    attack(out, int(port), tls == "1", method, path, int(declared), stall == "1", int(clients),
           int(seconds), headers.replace("\\r\\n", "\r\n"))
else:
    measure()
