#!/usr/bin/env python3
"""Per-module figures of a cargo-mutants run (scripts/mutants.sh --full).

    python3 scripts/mutants-report.py [MUTANTS_OUT]   # default target/mutants-out

Reads mutants.out/{caught,missed,timeout,unviable}.txt (written as the run
goes, so a partial run reports what it has tested) and prints, per module
(qlearn-core's engine, tenancy and stores; saas-host), the mutants caught,
missed, timed out (counted as caught: the tests did not pass) and unviable
(did not build), the share of viable ones caught, then every missed mutant.
"""
import os
import sys
from collections import defaultdict

KINDS = ("caught", "missed", "timeout", "unviable")


def module(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "qlearn-core" and len(parts) > 2:
        sub = parts[2]
        if sub == "store":
            return "qlearn-core stores (store/)"
        if sub == "tenancy":
            return "qlearn-core tenancy (tenancy/)"
        if sub == "decisions":
            return "qlearn-core decisions (decisions/)"
        return "qlearn-core engine (model/, table/, state, config, codec, rng...)"
    if parts[0] == "saas-host":
        return "saas-host (HTTP host)"
    return parts[0]


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "target/mutants-out"
    base = os.path.join(out, "mutants.out")
    counts = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    missed = []
    for kind in KINDS:
        try:
            lines = open(os.path.join(base, f"{kind}.txt")).read().splitlines()
        except FileNotFoundError:
            continue
        for line in filter(None, lines):
            counts[module(line.split(":", 1)[0])][kind] += 1
            if kind == "missed":
                missed.append(line)
    print("| module | tested | caught | missed | timeout | unviable | caught of viable |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(counts):
        c = counts[name]
        viable = c["caught"] + c["missed"] + c["timeout"]
        share = f"{100 * (c['caught'] + c['timeout']) / viable:.0f} %" if viable else "-"
        print(f"| {name} | {viable + c['unviable']} | {c['caught']} | {c['missed']} "
              f"| {c['timeout']} | {c['unviable']} | {share} |")
    for line in missed:
        print(f"missed: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
