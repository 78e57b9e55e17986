#!/usr/bin/env python3
"""A small fake Kubernetes API server for scripts/bench-operator.sh: enough for the real
nes-operator to start, elect itself, keep its certificates and serve.

Objects live in memory, addressed by path: POST creates, GET reads or lists, PUT replaces,
PATCH merges (every patch type as a JSON merge patch; an apply patch creates), DELETE
removes. A watch answers nothing and stays open until its timeoutSeconds. A TokenReview is
authenticated only for the one token given; every SubjectAccessReview is allowed;
GET /bench/reviews counts both. Plain HTTP on 127.0.0.1; the port chosen is written to the
file given.

    bench-operator-api.py PORT_FILE ADMIN_TOKEN
"""

import copy
import datetime
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid

PORT_FILE, ADMIN_TOKEN = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
STORE = {}  # (group_version, resource, namespace, name) -> object
VERSION = [0]
REVIEWS = {"tokenreviews": 0, "subjectaccessreviews": 0}


def next_version():
    VERSION[0] += 1
    return str(VERSION[0])


def parse(path):
    """(group_version, resource, namespace, name, subresource) of an API path, or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        gv, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        gv, rest = "/".join(parts[1:3]), parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        return None
    return gv, rest[0], ns, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "message": message, "code": code}


def merge(target, patch):
    """RFC 7386: null removes a key, objects merge, anything else replaces."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def stamp(obj, ns, name):
    meta = obj.setdefault("metadata", {})
    meta["name"] = name
    if ns:
        meta["namespace"] = ns
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp",
                    datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    meta["resourceVersion"] = next_version()
    return obj


def review(resource, body):
    REVIEWS[resource] += 1
    if resource == "tokenreviews":
        ok = body.get("spec", {}).get("token") == ADMIN_TOKEN
        body["status"] = {"authenticated": ok, "audiences": body.get("spec", {}).get("audiences")}
        if ok:
            body["status"]["user"] = {"username": "bench-admin", "uid": "bench",
                                      "groups": ["system:authenticated"]}
        else:
            body["status"]["error"] = "invalid bearer token"
    else:
        body["status"] = {"allowed": True}
    return 201, body


class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the bench prints its own table
        pass

    def answer(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        return parse(url.path), urllib.parse.parse_qs(url.query)

    def do_GET(self):
        where, query = self.route()
        if self.path == "/bench/reviews":  # the bench's own question: reviews asked so far
            return self.answer(200, REVIEWS)
        if where is None:
            return self.answer(404, status(404, "NotFound", self.path))
        gv, res, ns, name, _ = where
        if name is None and query.get("watch", ["false"])[0] in ("true", "1"):
            return self.watch(int(query.get("timeoutSeconds", ["290"])[0]))
        with LOCK:
            if name is None:
                items = [o for (g, r, n, _), o in STORE.items()
                         if g == gv and r == res and (ns is None or n == ns)]
                return self.answer(200, {"kind": "List", "apiVersion": "v1", "items": items,
                                         "metadata": {"resourceVersion": str(VERSION[0])}})
            obj = STORE.get((gv, res, ns, name))
        if obj is None:
            return self.answer(404, status(404, "NotFound", f"{res} {name} not found"))
        self.answer(200, obj)

    def watch(self, timeout):
        """An open watch that reports nothing, ended (empty chunked stream) at its timeout."""
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        time.sleep(min(timeout, 290))
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self):
        where, _ = self.route()
        if where is None:
            return self.answer(404, status(404, "NotFound", self.path))
        gv, res, ns, _, _ = where
        body = self.body()
        if res in REVIEWS:
            return self.answer(*review(res, body))
        meta = body.get("metadata", {})
        name = meta.get("name") or meta.get("generateName", "x-") + uuid.uuid4().hex[:5]
        with LOCK:
            if (gv, res, ns, name) in STORE:
                return self.answer(409, status(409, "AlreadyExists", f"{res} {name} exists"))
            STORE[(gv, res, ns, name)] = stamp(body, ns, name)
        self.answer(201, body)

    def do_PUT(self):
        where, _ = self.route()
        if where is None or where[3] is None:
            return self.answer(404, status(404, "NotFound", self.path))
        gv, res, ns, name, _ = where
        body = self.body()
        with LOCK:
            old = STORE.get((gv, res, ns, name))
            if old is None:
                return self.answer(404, status(404, "NotFound", f"{res} {name} not found"))
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent and sent != old["metadata"]["resourceVersion"]:
                return self.answer(409, status(409, "Conflict", "resourceVersion changed"))
            body.setdefault("metadata", {})["uid"] = old["metadata"]["uid"]
            STORE[(gv, res, ns, name)] = stamp(body, ns, name)
        self.answer(200, body)

    def do_PATCH(self):
        where, _ = self.route()
        if where is None or where[3] is None:
            return self.answer(404, status(404, "NotFound", self.path))
        gv, res, ns, name, _ = where
        body = self.body()
        apply = "apply-patch" in (self.headers.get("content-type") or "")
        with LOCK:
            old = STORE.get((gv, res, ns, name))
            if old is None and not apply:
                return self.answer(404, status(404, "NotFound", f"{res} {name} not found"))
            new = stamp(merge(old or {}, body), ns, name)
            STORE[(gv, res, ns, name)] = new
        self.answer(200 if old else 201, new)

    def do_DELETE(self):
        where, _ = self.route()
        if where is None or where[3] is None:
            return self.answer(404, status(404, "NotFound", self.path))
        gv, res, ns, name, _ = where
        with LOCK:
            old = STORE.pop((gv, res, ns, name), None)
        if old is None:
            return self.answer(404, status(404, "NotFound", f"{res} {name} not found"))
        self.answer(200, old)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Api)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
# Renamed into place: whoever waits for the file reads a whole port number.
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
