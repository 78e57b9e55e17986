#!/usr/bin/env python3
"""Helpers for scripts/test-kernel.sh that need to read cargo's JSON.

  list-tests.py targets REGEX  < `cargo metadata --no-deps --format-version 1`
      Prints the names of the workspace's integration-test targets whose name
      matches REGEX (one per line, sorted, unique).

  list-tests.py executables REGEX < `cargo test --no-run --message-format=json...`
      Prints one line per built test executable whose target name matches
      REGEX:  LABEL <TAB> EXECUTABLE <TAB> PACKAGE_DIR
      LABEL is "<package>/<target>"; PACKAGE_DIR is where `cargo test` would
      run it (the package's manifest directory).
"""
import json
import os
import re
import sys


def targets(pattern):
    meta = json.load(sys.stdin)
    names = set()
    for pkg in meta["packages"]:
        for tgt in pkg["targets"]:
            if "test" in tgt["kind"] and pattern.search(tgt["name"]):
                names.add(tgt["name"])
    for name in sorted(names):
        print(name)


def package_name(package_id):
    """Name from a cargo package id, in any of cargo's formats:
    "path+file:///w/agent#nes-agent@0.1.0", "path+file:///w/api#0.1.0"
    (name = last path component) or the old "nes-api 0.1.0 (path+file://...)".
    """
    if " (" in package_id:
        return package_id.split(" ", 1)[0]
    url, _, frag = package_id.rpartition("#")
    if "@" in frag:
        return frag.split("@", 1)[0]
    return url.rstrip("/").rsplit("/", 1)[-1]


def executables(pattern):
    seen = set()
    rows = []
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact":
            continue
        tgt = msg["target"]
        exe = msg.get("executable")
        if not exe or "test" not in tgt["kind"] or not msg["profile"]["test"]:
            continue
        if not pattern.search(tgt["name"]):
            continue
        pkg = package_name(msg["package_id"])
        label = f"{pkg}/{tgt['name']}"
        if label in seen:
            continue
        seen.add(label)
        pkg_dir = os.path.dirname(msg["manifest_path"])
        rows.append((label, exe, pkg_dir))
    for row in sorted(rows):
        print("\t".join(row))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("targets", "executables"):
        sys.exit(__doc__)
    pattern = re.compile(sys.argv[2])
    {"targets": targets, "executables": executables}[sys.argv[1]](pattern)


if __name__ == "__main__":
    main()
