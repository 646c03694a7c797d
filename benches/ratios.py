#!/usr/bin/env python3
"""Prints the zonepki/raw overhead table from criterion's last run (benches/core.rs).

Reads target/criterion/<group>/<id>/new/estimates.json (median.point_estimate, in ns) and
prints a markdown table: group | zonepki median | raw median | ratio | target.
Other benchmark IDs in a group (extra baselines) are listed below the table.

Usage: python3 benches/ratios.py [TARGET_DIR]   (default: ./target, or $CARGO_TARGET_DIR)
Exit status 1 when a ratio misses its target, 2 when no estimates are found.
"""

import glob
import json
import os
import sys

TARGETS = {"cert_view": 1.3, "issue_p256": 1.15, "chain_p256": 1.1}


def fmt_ns(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
    medians = {}
    pattern = os.path.join(target, "criterion", "*", "*", "new", "estimates.json")
    for path in sorted(glob.glob(pattern)):
        parts = os.path.normpath(path).split(os.sep)
        group, bench = parts[-4], parts[-3]
        with open(path, encoding="utf-8") as f:
            medians.setdefault(group, {})[bench] = json.load(f)["median"]["point_estimate"]
    if not medians:
        print(f"no estimates under {target}/criterion: run cargo bench first", file=sys.stderr)
        return 2

    missed = False
    print("| group | zonepki median | raw median | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    extras = []
    order = list(TARGETS)
    for group in sorted(medians, key=lambda g: (order.index(g) if g in order else len(order), g)):
        ids = medians[group]
        if "zonepki" not in ids or "raw" not in ids:
            continue
        ratio = ids["zonepki"] / ids["raw"]
        goal = TARGETS.get(group)
        verdict = ""
        if goal is not None:
            ok = ratio <= goal
            missed |= not ok
            verdict = f"<= {goal} {'ok' if ok else 'MISSED'}"
        print(f"| {group} | {fmt_ns(ids['zonepki'])} | {fmt_ns(ids['raw'])} "
              f"| {ratio:.3f} | {verdict} |")
        for other in sorted(set(ids) - {"zonepki", "raw"}):
            extras.append((group, other, ids["zonepki"], ids[other]))
    if extras:
        print()
        print("Extra baselines (informative, no target):")
        print()
        print("| group / baseline | zonepki median | baseline median | ratio |")
        print("|---|---:|---:|---:|")
        for group, other, z, o in extras:
            print(f"| {group} / {other} | {fmt_ns(z)} | {fmt_ns(o)} | {z / o:.3f} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
