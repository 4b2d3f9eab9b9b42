"""Prints every table of a SQLite database as a canonical, sorted multiset of rows.

An independent reader (CPython's sqlite3 module, not tablesafe's code) used by the
tests to compare a restored database with its source. REAL values are printed as the
hex of their IEEE-754 bits, so -0.0, infinities and every last bit count.
Usage: dump_sqlite.py DB [TABLE...]  (default: all tables)
"""
import json
import sqlite3
import struct
import sys

db = sqlite3.connect(sys.argv[1])
db.text_factory = bytes
tables = sys.argv[2:] or [
    r[0].decode() for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
]

def cell(v):
    if v is None:
        return ["null"]
    if isinstance(v, int):
        return ["integer", str(v)]
    if isinstance(v, float):
        return ["real", struct.pack("<d", v).hex()]
    if isinstance(v, bytes):
        return ["text", v.hex()]
    return ["blob", bytes(v).hex()]

out = {}
for t in tables:
    q = '"' + t.replace('"', '""') + '"'
    cols = [r[0].decode() for r in db.execute("SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0", (t,))]
    quoted = ['"' + c.replace('"', '""') + '"' for c in cols]
    # typeof() tells TEXT from BLOB, which text_factory=bytes would merge.
    sel = ", ".join(quoted + [f"typeof({c})" for c in quoted])
    rows = []
    for r in db.execute(f"SELECT {sel} FROM {q}"):
        vals, types = r[:len(cols)], r[len(cols):]
        rows.append(json.dumps([["blob", bytes(v).hex()] if ty == b"blob" else cell(v) for v, ty in zip(vals, types)]))
    out[t] = {"columns": cols, "rows": sorted(rows)}
print(json.dumps(out, sort_keys=True))
