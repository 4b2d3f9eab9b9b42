#!/usr/bin/env python3
"""Records one benchmark's figures as JSON, for the guide's table and chart.

    python3 bench/record.py S7 --workload "SQLite 1 GB database" \
        --measure "backup / (sqlite3 .backup + zstd -3)" 41.2 30.1 1.5 \
        --measure "restore / (copy + zstd -d)" 12.0 7.5 2.0 \
        [--extra peak_rss_mb=73] [--note "text"] [--out bench/results]

Each --measure is NAME OURS ANCHOR GOAL: the two times (or sizes) of one ratio, ours
first, and the goal for ours/anchor (a ratio at most GOAL meets it). Writes
bench/results/<ID>.json (replacing the previous figures of that benchmark) with the
machine, the date and the commit, and prints the ratios. `bench/chart.py` renders
every results file into the guide's table and chart.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except OSError:
        mem_kb = 0
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024),
        "cpu": cpu,
        "os": platform.platform(),
    }


def commit(root: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("id", help="benchmark id, e.g. S7")
    p.add_argument("--workload", required=True)
    p.add_argument("--measure", nargs=4, action="append", required=True,
                   metavar=("NAME", "OURS", "ANCHOR", "GOAL"))
    p.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--out", default=os.path.join(root, "bench", "results"))
    a = p.parse_args()
    measures = []
    for name, ours, anchor, goal in a.measure:
        ours_f, anchor_f, goal_f = float(ours), float(anchor), float(goal)
        if anchor_f <= 0:
            print(f"{name}: the anchor measured {anchor_f}; nothing to compare", file=sys.stderr)
            return 2
        ratio = ours_f / anchor_f
        measures.append({
            "name": name, "ours": ours_f, "anchor": anchor_f,
            "ratio": round(ratio, 3), "goal": goal_f, "met": ratio <= goal_f,
        })
        mark = "met" if ratio <= goal_f else "MISSED"
        print(f"{a.id} {name}: {ours_f:g} / {anchor_f:g} = {ratio:.2f} (goal <= {goal_f:g}, {mark})")
    extra = {}
    for kv in a.extra:
        k, _, v = kv.partition("=")
        try:
            extra[k] = float(v)
        except ValueError:
            extra[k] = v
    doc = {
        "id": a.id,
        "workload": a.workload,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(root),
        "machine": machine(),
        "measures": measures,
        "extra": extra,
        "notes": a.note,
    }
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{a.id}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
