#!/usr/bin/env bash
# Builds the user guide (docs/, mdBook) into a temporary directory and fails on a broken
# internal link: a link from a chapter or from README.md to a file that is not there, or
# to an #anchor that no heading of that file makes. Prints how long it took.
#
#   scripts/check_docs.sh
#
# mdBook is installed once, pinned, by ensure_mdbook (scripts/lib.sh). The links are
# checked in the Markdown, with the heading ids mdBook (and GitHub, for the README) make.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$SECONDS
ensure_mdbook

step "building the user guide (docs/) with mdbook" \
  "mdbook's error is above; 'mdbook build docs -d /tmp/guide' repeats it alone."
out="$(mktemp -d)"
# Remove it on the way out, then say which step failed (lib.sh's on_exit reads $?).
trap 'rc=$?; rm -rf "$out"; set +e; (exit "$rc"); on_exit' EXIT
# A copy, so that mdbook never creates a missing chapter's file in the working tree.
cp -r "$ROOT/docs" "$out/docs"
mdbook build "$out/docs" -d "$out/html" >/dev/null 2>"$out/mdbook.log" || {
  cat "$out/mdbook.log" >&2
  exit 1
}
if grep -E '(WARN|ERROR)' "$out/mdbook.log" >&2; then
  echo "mdbook warned (above): fix the guide so that it builds cleanly" >&2
  exit 1
fi

step "checking the links of docs/src and README.md" \
  "Each broken link is listed above with its file and line: fix the link, or the heading it points to."
python3 - "$ROOT" <<'PY'
import os, re, sys

root = sys.argv[1]
src = os.path.join(root, "docs", "src")

def strip_code(text):
    """The text with fenced code blocks blanked (line numbers kept)."""
    out, fence = [], None
    for line in text.split("\n"):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out

def slug(heading):
    """mdBook's (and GitHub's) id for a heading: lower case, spaces to '-', only
    letters, digits, '-' and '_' kept."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)
    out = []
    for ch in text.strip():
        if ch.isalnum() or ch in "-_":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)

anchors_cache = {}
def anchors(path):
    if path not in anchors_cache:
        seen, ids = {}, set()
        for line in strip_code(open(path, encoding="utf-8").read()):
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            m2 = re.search(r"\{#([\w-]+)\}\s*$", m.group(1))
            base = m2.group(1) if m2 else slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            ids.add(base if n == 0 else f"{base}-{n}")
        anchors_cache[path] = ids
    return anchors_cache[path]

link_re = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")

def check(path):
    errors = []
    lines = strip_code(open(path, encoding="utf-8").read())
    for no, line in enumerate(lines, 1):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for m in link_re.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            where = f"{os.path.relpath(path, root)}:{no}"
            if not os.path.exists(dest):
                errors.append(f"{where}: {target}: no file {os.path.relpath(dest, root)}")
                continue
            if anchor and dest.endswith(".md") and anchor not in anchors(dest):
                errors.append(f"{where}: {target}: {os.path.relpath(dest, root)} has no heading #{anchor}")
    return errors

files = [os.path.join(root, "README.md")]
for d, _, names in os.walk(src):
    files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".md")]
errors = []
for f in files:
    errors += check(f)
# Every chapter is in SUMMARY.md (a page left out is never built, so never read).
summary = open(os.path.join(src, "SUMMARY.md"), encoding="utf-8").read()
listed = {os.path.normpath(os.path.join(src, t)) for t in re.findall(r"\]\(([^)#]+\.md)\)", summary)}
for f in files[1:]:
    if not f.endswith("SUMMARY.md") and os.path.normpath(f) not in listed:
        errors.append(f"{os.path.relpath(f, root)}: not listed in docs/src/SUMMARY.md")
for e in errors:
    print(e, file=sys.stderr)
if errors:
    print(f"{len(errors)} broken link(s) in the guide and README", file=sys.stderr)
    sys.exit(1)
print(f"{len(files)} files, links checked: none broken")
PY

say "the guide builds and its links hold ($((SECONDS - started)) s)"
