#!/usr/bin/env python3
"""Checks two layout rules that ARCHITECTURE.md states, so they cannot go
stale (run by .ci/run):

1. No import cycles between the top-level modules of a crate (a `use
   crate::a` in module b and a `use crate::b` in module a). Test modules
   (`#[cfg(test)]` to the end of a file) and doc links do not count.
2. No source file over 700 lines, except the ones listed in LONG_FILES with
   the reason they stay whole.

Exits 1 and says what is wrong; prints one summary line otherwise.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

CRATES = ["qlearn-core/src", "saas-host/src", "py-bindings/src"]
MAX_LINES = 700
# File -> why it is one file although it is long.
LONG_FILES = {
    "qlearn-core/tests/conformance/mod.rs": "the one storage suite: every check "
    "is listed next to the others in one macro, and the list guard reads this file",
    "qlearn-core/tests/engine.rs": "hand-computed values for every learning rule, "
    "one test per rule; splitting would scatter the shared fixtures",
    "qlearn-core/tests/decisions.rs": "the decisions suite: one scenario per "
    "rule of the issue (idempotency, clock, aggregation, interleavings, chi-square)",
}


def module_of(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    return "lib" if rel[0] in ("lib", "main") else rel[0]


def code_of(text: str) -> str:
    text = text.split("#[cfg(test)]")[0]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def cycles(root: str) -> list[str]:
    graph: dict[str, set[str]] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(dirpath, f)
                m = module_of(root, path)
                with open(path, encoding="utf-8") as fh:
                    deps = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code_of(fh.read())))
                graph.setdefault(m, set()).update(d for d in deps if d != m)
    found = set()
    for a, deps in graph.items():
        for b in deps:
            if a in graph.get(b, ()):  # a -> b -> a
                found.add(" <-> ".join(sorted((a, b))))
    # Longer cycles: a path from b back to a.
    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], {start}
        while stack:
            node, path = stack.pop()
            for d in graph.get(node, ()):
                if d == goal:
                    return path + [d]
                if d not in seen:
                    seen.add(d)
                    stack.append((d, path + [d]))
        return None
    for a, deps in graph.items():
        for b in deps:
            p = reaches(b, a)
            if p and len(p) > 2:
                found.add(" -> ".join([a] + p))
    return sorted(found)


def main() -> int:
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    problems = []
    for root in CRATES:
        for c in cycles(root):
            problems.append(f"import cycle in {root}: {c}")
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True)
    for path in tracked.stdout.split():
        if not path.endswith((".rs", ".py", ".js", ".mjs")) or path in LONG_FILES:
            continue
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            n = sum(1 for _ in fh)
        if n > MAX_LINES:
            problems.append(f"{path}: {n} lines (over {MAX_LINES}; cut it along its seams or list it with a reason)")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"layout: no import cycles in {', '.join(CRATES)}; no file over {MAX_LINES} lines "
          f"except {len(LONG_FILES)} listed with reasons")
    return 0


if __name__ == "__main__":
    sys.exit(main())
