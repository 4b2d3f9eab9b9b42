#!/usr/bin/env python3
"""Tests of bench/chart.py on results recorded by bench/record.py into a temp dir.

    python3 bench/chart_test.py
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

BENCH = os.path.dirname(os.path.abspath(__file__))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True)


class ChartTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = self.tmp.name
        self.results = os.path.join(d, "results")
        self.svg = os.path.join(d, "images", "benchmarks.svg")
        self.doc = os.path.join(d, "benchmarks.md")
        with open(self.doc, "w") as f:
            f.write("# Benchmarks\n\nabove\n\n<!-- results:begin -->\nold table\n<!-- results:end -->\n\n## Older\nbelow\n")

    def tearDown(self):
        self.tmp.cleanup()

    def record(self, bench_id, workload, *measures, note=None):
        args = [os.path.join(BENCH, "record.py"), bench_id, "--workload", workload, "--out", self.results]
        for m in measures:
            args += ["--measure", *map(str, m)]
        if note:
            args += ["--note", note]
        r = run(*args)
        self.assertEqual(r.returncode, 0, r.stderr)

    def chart(self, *extra):
        return run(os.path.join(BENCH, "chart.py"), "--results", self.results, "--svg", self.svg,
                   "--doc", self.doc, *extra)

    def test_table_and_chart_show_every_ratio_against_its_goal(self):
        self.record("S10", "ten", ("p99 (ms) / 50 ms", 1780, 50, 1.0))
        self.record("S7", "SQLite 1 GB | WAL", ("backup / (sqlite3 .backup + zstd -3)", 41.2, 30.1, 1.5),
                    ("restore / (copy + zstd -d)", 30, 7.5, 2.0), note="one run")
        r = self.chart()
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = read(self.doc)
        # The text around the markers is kept; the old table is replaced.
        self.assertTrue(doc.startswith("# Benchmarks\n\nabove\n\n<!-- results:begin -->\n"))
        self.assertTrue(doc.endswith("<!-- results:end -->\n\n## Older\nbelow\n"))
        self.assertNotIn("old table", doc)
        lines = [l for l in doc.splitlines() if l.startswith("| S")]
        # Benchmark order is numeric (S7 before S10), one line per measure.
        self.assertEqual([l.split("|")[1].strip() for l in lines], ["S7", "S7", "S10"])
        self.assertIn("| S7 | SQLite 1 GB \\| WAL | backup / (sqlite3 .backup + zstd -3) | 41.2 | 30.1 | **1.37** | ≤ 1.5 | yes |", lines[0])
        self.assertIn("| **4.00** | ≤ 2 | **no** |", lines[1])
        self.assertIn("| 1,780 | 50 | **35.60** | ≤ 1 | **no** |", lines[2])
        self.assertIn("- S7: one run", doc)
        svg = read(self.svg)
        self.assertTrue(svg.startswith("<svg") and svg.rstrip().endswith("</svg>"))
        # One labelled bar per measure: green where met, red where missed.
        self.assertIn(">S7 backup / (sqlite3 .backup + zstd -3)<", svg)
        self.assertIn(">S10 p99 (ms) / 50 ms<", svg)
        bars = re.findall(r'<rect x="400" y="[\d.]+" width="([\d.]+)" height="14" fill="(#[0-9a-f]+)"/>', svg)
        self.assertEqual([c for _, c in bars], ["#2e7d32", "#c62828", "#c62828"])
        # Longer ratio, longer bar (4.0 and 35.6 against 1.37).
        widths = [float(w) for w, _ in bars]
        self.assertLess(widths[0], widths[1])
        self.assertLess(widths[1], widths[2])
        self.assertIn("1 of 3 met", svg)

    def test_check_fails_when_a_result_was_recorded_without_rendering(self):
        self.record("S3", "big", ("backup / pg_dump -Fc", 20, 90, 0.3))
        self.assertEqual(self.chart().returncode, 0)
        r = self.chart("--check")
        self.assertEqual(r.returncode, 0, r.stderr)
        before = (read(self.svg), read(self.doc))
        self.record("S3", "big", ("backup / pg_dump -Fc", 40, 90, 0.3))
        r = self.chart("--check")
        self.assertEqual(r.returncode, 1)
        self.assertIn("run `python3 bench/chart.py`", r.stderr)
        # --check writes nothing.
        self.assertEqual((read(self.svg), read(self.doc)), before)
        self.assertEqual(self.chart().returncode, 0)
        self.assertIn("**0.44**", read(self.doc))
        self.assertEqual(self.chart("--check").returncode, 0)

    def test_a_benchmark_of_many_measures_is_its_worst_bar_and_every_table_line(self):
        calls = [(f"call{i} p99 (ms) / 50 ms", 10 + i, 50, 1.0) for i in range(8)]
        calls[3] = ("dashboard p99 (ms) / 50 ms", 90, 50, 1.0)
        self.record("S8", "console", *calls)
        self.assertEqual(self.chart().returncode, 0)
        svg = read(self.svg)
        self.assertEqual(svg.count('height="14" fill='), 1)
        self.assertIn(">S8 worst of 8 (7 met): dashboard p99 (ms) / 50 ms<", svg)
        self.assertIn("#c62828", svg)
        self.assertIn("7 of 8 met", svg)
        self.assertEqual(len([l for l in read(self.doc).splitlines() if l.startswith("| S8 ")]), 8)

    def test_no_markers_is_an_error_that_says_what_to_add(self):
        with open(self.doc, "w") as f:
            f.write("# Benchmarks\n")
        self.record("S1", "x", ("a / b", 1, 2, 1))
        r = self.chart()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("<!-- results:begin -->", r.stderr)

    def test_no_results_yet(self):
        r = self.chart()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("No results recorded yet", read(self.doc))
        self.assertIn("No results recorded yet", read(self.svg))


if __name__ == "__main__":
    unittest.main()
