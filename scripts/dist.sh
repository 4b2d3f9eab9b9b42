#!/usr/bin/env bash
# Release artefacts, from the same build CI tests (scripts/lib.sh build_release):
#   dist/tablesafe-VERSION-x86_64-linux.tar.gz  the binary (browser files embedded), the
#       systemd unit, an example config, man pages, shell completions, LICENSE, README
#   dist/tablesafe_VERSION_amd64.deb            the same as a Debian package (dpkg-deb):
#       /usr/bin/tablesafe, the `tablesafe` system user, /etc/tablesafe/tablesafe.toml
#       (a conffile), /var/lib/tablesafe (0700), the hardened unit
#   dist/SHA256SUMS
# Sources of everything but the binary: packaging/. Test them: scripts/check_packages.sh.
#
# Usage: scripts/dist.sh                 build, then package target/release/tablesafe
#        TABLESAFE_DIST_BIN=PATH scripts/dist.sh   package an already built binary
# Set SOURCE_DATE_EPOCH for reproducible archives (default: the last commit's time).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

bin="${TABLESAFE_DIST_BIN:-}"
if [ -z "$bin" ]; then
  build_release
  bin="$ROOT/target/release/tablesafe"
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

step "packaging $bin into dist/" "Read the error above; packaging/ holds the files packaged."
apt_install xz-utils binutils # objdump: the oldest glibc the binary needs
stage="$(mktemp -d)"
cleanup() {
  local rc=$?
  rm -rf "$stage"
  (exit "$rc") || on_exit # lib.sh's message naming the failed step
}
trap cleanup EXIT
# A copy, so another build replacing target/release/tablesafe meanwhile cannot mix two.
install -m 0755 "$bin" "$stage/tablesafe"
bin="$stage/tablesafe"
# Debug information out (symbol names stay, so a panic's backtrace still names functions):
# 3 of its 75 MB here. (A full strip saves 17 MB but leaves backtraces unnamed.)
strip --strip-debug "$bin"
version="$("$bin" --version | awk '{print $2}')"
[ -n "$version" ] || { echo "cannot read the version from '$bin --version'" >&2; exit 1; }
say "tablesafe $version: $("$bin" --version)"
# The oldest glibc the binary runs on: the newest symbol version it uses.
glibc="$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"

# Generated from the clap definitions (tablesafe completions SHELL, tablesafe man).
gen="$stage/gen"
mkdir -p "$gen/man" "$gen/completions"
"$bin" man --out-dir "$gen/man"
"$bin" completions bash >"$gen/completions/tablesafe.bash"
"$bin" completions zsh >"$gen/completions/_tablesafe"
"$bin" completions fish >"$gen/completions/tablesafe.fish"
ls "$gen/man"/*.1 >/dev/null

readme() { sed -e "s/@VERSION@/$version/g" -e "s/@GLIBC@/$glibc/g" packaging/README.tarball.md; }

# Archives list names sorted, owned by root, dated SOURCE_DATE_EPOCH: the same inputs
# give the same bytes.
tar_gz() { # DIR NAME OUT
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$1" -cf - "$2" | gzip -9 -n >"$3"
}

mkdir -p dist
name="tablesafe-$version-x86_64-linux"
t="$stage/tar/$name"
mkdir -p "$t/man" "$t/completions"
install -m 0755 "$bin" "$t/tablesafe"
install -m 0644 packaging/tablesafe.service packaging/tablesafe.toml LICENSE "$t/"
readme >"$t/README.md"
install -m 0644 "$gen/man"/*.1 "$t/man/"
install -m 0644 "$gen/completions"/* "$t/completions/"
tar_gz "$stage/tar" "$name" "dist/$name.tar.gz"

# The Debian package. dpkg-deb, not cargo-deb: it needs no compile, and every file's
# place and mode is spelled out here.
deb_version="${version//-/\~}"
d="$stage/deb"
install -D -m 0755 "$bin" "$d/usr/bin/tablesafe"
install -D -m 0644 packaging/tablesafe.service "$d/lib/systemd/system/tablesafe.service"
# 0640; postinst gives it the group tablesafe (it may hold a database password).
install -D -m 0640 packaging/tablesafe.toml "$d/etc/tablesafe/tablesafe.toml"
install -d -m 0755 "$d/usr/share/doc/tablesafe" "$d/usr/share/man/man1"
readme >"$d/usr/share/doc/tablesafe/README.md"
cat >"$d/usr/share/doc/tablesafe/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tablesafe

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
for m in "$gen/man"/*.1; do
  gzip -9 -n -c "$m" >"$d/usr/share/man/man1/${m##*/}.gz"
done
install -D -m 0644 "$gen/completions/tablesafe.bash" "$d/usr/share/bash-completion/completions/tablesafe"
install -D -m 0644 "$gen/completions/_tablesafe" "$d/usr/share/zsh/vendor-completions/_tablesafe"
install -D -m 0644 "$gen/completions/tablesafe.fish" "$d/usr/share/fish/vendor_completions.d/tablesafe.fish"
install -d -m 0755 "$d/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$d/DEBIAN/"
install -m 0644 packaging/debian/conffiles "$d/DEBIAN/"
size="$(du -sk --exclude=DEBIAN "$d" | cut -f1)"
sed -e "s/@VERSION@/$deb_version/" -e "s/@SIZE@/$size/" \
  -e "s/@DEPENDS@/libc6 (>= $glibc), libgcc-s1, adduser/" \
  packaging/debian/control.in >"$d/DEBIAN/control"
(cd "$d" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z \
  | xargs -0 md5sum >DEBIAN/md5sums)
find "$d" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb="dist/tablesafe_${deb_version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$d" "$deb" >/dev/null

(cd dist && sha256sum "$name.tar.gz" "${deb##*/}" >SHA256SUMS)
say "made dist/$name.tar.gz ($(du -h "dist/$name.tar.gz" | cut -f1)) and $deb ($(du -h "$deb" | cut -f1))"
