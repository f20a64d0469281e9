#!/usr/bin/env bash
# Builds the Debian package rackguard_<version>_<arch>.deb with dpkg-deb, for the architecture of the
# machine it runs on: the native modules (better-sqlite3, serialport) are compiled or fetched by npm for
# this machine, so build the arm64 package on a Raspberry Pi (or another arm64 machine), not on a PC.
#
#   scripts/build-deb.sh            prints the path of the .deb as its last line of output
#
# Environment (all optional):
#   RACKGUARD_DEB_VERSION   upstream version (default: "version" of package.json); it also becomes the
#                           version the installed `rackguard --version` prints
#   RACKGUARD_DEB_REVISION  Debian revision (default 1): the package version is VERSION-REVISION
#   RACKGUARD_DEB_OUT       output directory (default: dist/deb in the repository)
#   RACKGUARD_DEB_MODULES_CACHE  directory to keep the built production node_modules in, per lock file,
#                           arch and node ABI, for the next build (default: none, always npm ci)
#   npm_config_offline=true npm ci uses only its cache and never the network (as the tests do)
#   SOURCE_DATE_EPOCH       date of a generated changelog entry (default: the last commit's date)
#
# Needs: node and npm (20+), dpkg-deb and dpkg-shlibdeps (dpkg-dev), make and g++ when better-sqlite3
# must be compiled, and the repository's dev dependencies (typescript) installed (`npm ci`).
# Layout of the package: /usr/lib/rackguard/{dist,config/profiles,node_modules,package.json},
# /usr/bin/rackguard and /usr/bin/rackguard-sim, /lib/systemd/system/rackguard{,-host}.service,
# /etc/rackguard/{rackguard.yaml,host.example.yaml} (conffiles), /usr/share/doc/rackguard/.
set -euo pipefail

log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKGDIR=$ROOT/packaging

for tool in node npm dpkg-deb dpkg-shlibdeps dpkg-architecture gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (node/npm: Node.js 20+; dpkg-*: apt-get install dpkg-dev)"
done
[[ -x $ROOT/node_modules/typescript/bin/tsc ]] || die "typescript is not installed in $ROOT/node_modules: run npm ci first"

UPSTREAM_VERSION=${RACKGUARD_DEB_VERSION:-$(node -p "require('$ROOT/package.json').version")}
REVISION=${RACKGUARD_DEB_REVISION:-1}
# Debian upstream versions start with a digit and use [A-Za-z0-9.+~]; a revision has no "-".
[[ $UPSTREAM_VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "RACKGUARD_DEB_VERSION '$UPSTREAM_VERSION' is not a Debian upstream version"
[[ $REVISION =~ ^[A-Za-z0-9.+~]+$ ]] || die "RACKGUARD_DEB_REVISION '$REVISION' is not a Debian revision"
VERSION=$UPSTREAM_VERSION-$REVISION
ARCH=$(dpkg --print-architecture)
OUT=${RACKGUARD_DEB_OUT:-$ROOT/dist/deb}
DEB=$OUT/rackguard_${VERSION}_${ARCH}.deb

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/rackguard-deb-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/pkg
LIB=$PKG/usr/lib/rackguard
DOC=$PKG/usr/share/doc/rackguard
mkdir -p "$LIB/dist" "$LIB/config" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/rackguard" "$DOC" "$PKG/DEBIAN"

log "rackguard $VERSION for $ARCH, staging in $STAGE"

# 1. Compile the TypeScript afresh (never ship whatever dist/ holds) and keep what runs in production:
# the agent, its drill command and the simulator it imports. No source maps: their sources are not shipped.
log "compiling TypeScript"
node "$ROOT/node_modules/typescript/bin/tsc" -p "$ROOT/tsconfig.json" --outDir "$STAGE/tsc" --sourceMap false
for dir in agent drill firmware-sim; do
  cp -a "$STAGE/tsc/$dir" "$LIB/dist/$dir"
done
cp -a "$ROOT/config/profiles" "$LIB/config/profiles"

# 2. Production dependencies only, exactly as package-lock.json pins them, built for this machine.
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$LIB/"
# A cache of the finished node_modules, keyed by the lock file, the architecture and node's ABI, so that
# a second build (another version number, the package tests' upgrade) does not compile again.
cache_dir=""
if [[ -n ${RACKGUARD_DEB_MODULES_CACHE:-} ]]; then
  key=$(cat "$ROOT/package-lock.json" <(printf '%s %s\n' "$ARCH" "$(node -p 'process.versions.modules')") | sha256sum | cut -c1-16)
  cache_dir=$RACKGUARD_DEB_MODULES_CACHE/$key
fi
if [[ -n $cache_dir && -d $cache_dir/node_modules ]]; then
  log "production node_modules from the cache $cache_dir"
  cp -a "$cache_dir/node_modules" "$LIB/node_modules"
else
  log "npm ci --omit=dev (compiles better-sqlite3 when no prebuilt binary can be fetched: a minute or two)"
  (cd "$LIB" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2)
  # Build leftovers of native modules: object files and the SQLite sources are not needed to run.
  rm -rf "$LIB/node_modules/better-sqlite3/build/Release/obj.target" "$LIB/node_modules/better-sqlite3/build/Release/.deps" \
    "$LIB/node_modules/better-sqlite3/build/Release/obj" "$LIB/node_modules/better-sqlite3/build/deps" \
    "$LIB/node_modules/better-sqlite3/deps" "$LIB/node_modules/better-sqlite3/src"
  # serialport ships prebuilt bindings for every platform: keep this machine's (glibc) only.
  node_arch=$(node -p process.arch)
  find "$LIB/node_modules" -type d -name prebuilds -prune -print0 |
    while IFS= read -r -d '' prebuilds; do
      find "$prebuilds" -mindepth 1 -maxdepth 1 -type d ! -name "linux-$node_arch" -exec rm -rf {} +
      find "$prebuilds" -type f -name '*musl*' -delete
    done
  find "$LIB/node_modules" -name '*.node' -type f -print0 | xargs -0 -r strip --strip-unneeded
  if [[ -n $cache_dir ]]; then
    mkdir -p "$cache_dir.tmp" && rm -rf "$cache_dir.tmp/node_modules" && cp -a "$LIB/node_modules" "$cache_dir.tmp/" &&
      rm -rf "$cache_dir" && mv "$cache_dir.tmp" "$cache_dir"
  fi
fi
# What Debian policy (and lintian) does not want in a package and nothing needs at run time: the tools'
# dot files, a test-only SQLite extension, docs sites and benchmarks. Executable bits only where a
# program is: npm leaves some on plain .js, headers and licenses.
find "$LIB/node_modules" \( -name .npmignore -o -name '.eslintrc*' -o -name .gitattributes -o -name .editorconfig \
  -o -name .travis.yml -o -name '.prettierrc*' \) -type f -delete
find "$LIB/node_modules" -name .github -type d -prune -exec rm -rf {} +
rm -f "$LIB/node_modules/better-sqlite3/build/Release/test_extension.node" "$LIB/node_modules/pino/index.html"
rm -rf "$LIB/node_modules/pino/docs" "$LIB/node_modules/aedes/benchmarks" "$LIB/node_modules/secure-json-parse/benchmarks"
find "$LIB/node_modules" -type f -perm /111 -print0 |
  while IFS= read -r -d '' f; do
    case $(head -c 4 "$f" | od -An -c | tr -d ' ') in
      '#!'*) ;;                    # a script
      *) chmod a-x "$f" ;;         # a .node (a shared library, loaded, never run) or a plain file
    esac
  done
# The version the package carries is the one `rackguard --version` reports.
node -e '
  const fs = require("fs"); const f = process.argv[1]; const p = JSON.parse(fs.readFileSync(f, "utf8"));
  p.version = process.argv[2]; delete p.scripts; delete p.devDependencies;
  fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");
' "$LIB/package.json" "$UPSTREAM_VERSION"

# 3. Commands: node runs the compiled entry points directly (no npm, no tsx at run time).
cat > "$PKG/usr/bin/rackguard" <<'EOF'
#!/bin/sh
# rackguard command line (rackguard package): run, host, check-config, replay, drill, --version.
exec /usr/bin/node /usr/lib/rackguard/dist/agent/main.js "$@"
EOF
cat > "$PKG/usr/bin/rackguard-sim" <<'EOF'
#!/bin/sh
# rackguard-sim (rackguard package): a simulated rack that speaks real Modbus.
exec /usr/bin/node /usr/lib/rackguard/dist/firmware-sim/main.js "$@"
EOF
chmod 0755 "$PKG/usr/bin/rackguard" "$PKG/usr/bin/rackguard-sim"

# 4. Units, configuration, documentation.
cp "$ROOT/systemd/rackguard.service" "$ROOT/systemd/rackguard-host.service" "$PKG/lib/systemd/system/"
{
  printf '%s\n' \
    '# /etc/rackguard/rackguard.yaml: the configuration of rackguard.service (a conffile of the rackguard' \
    '# package: your changes are kept on upgrade, and dpkg asks before replacing a changed file).' \
    '# It starts as the reference example below: edit buses, devices, zones and outputs for your rack,' \
    '# check with `rackguard check-config /etc/rackguard/rackguard.yaml`, then `systemctl restart rackguard`' \
    '# (or `systemctl reload rackguard`). Secrets: see /usr/share/doc/rackguard/systemd.md (LoadCredential).' \
    ''
  cat "$ROOT/config/rackguard.example.yaml"
} > "$PKG/etc/rackguard/rackguard.yaml"
grep -q '^    path: /var/lib/rackguard/outbox.db$' "$PKG/etc/rackguard/rackguard.yaml" ||
  die "config/rackguard.example.yaml no longer keeps its outbox at /var/lib/rackguard/outbox.db: adapt build-deb.sh"
cp "$ROOT/config/host.example.yaml" "$PKG/etc/rackguard/host.example.yaml"

cp "$PKGDIR/copyright" "$DOC/copyright"
cp "$ROOT/README.md" "$DOC/README.md"
cp "$ROOT/systemd/README.md" "$DOC/systemd.md"
cp "$ROOT/docs/configuration.md" "$DOC/configuration.md"
cp "$ROOT/docs/host-agent.md" "$DOC/host-agent.md"
changelog=$STAGE/changelog
top=$(sed -n '1s/^rackguard (\([^)]*\)).*/\1/p' "$PKGDIR/changelog")
if [[ $top != "$VERSION" ]]; then
  # A build of a version the changelog does not name yet (a snapshot, or a test's upgrade): say so on top.
  epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  {
    printf 'rackguard (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Build of %s from commit %s.\n\n' "$UPSTREAM_VERSION" "$commit"
    printf ' -- %s  %s\n\n' "$(sed -n 's/^Maintainer: //p' "$PKGDIR/control.in")" "$(LC_ALL=C date -u -R -d "@$epoch")"
    cat "$PKGDIR/changelog"
  } > "$changelog"
else
  cp "$PKGDIR/changelog" "$changelog"
fi
gzip -9 -n -c "$changelog" > "$DOC/changelog.Debian.gz"
for f in README.md systemd.md configuration.md host-agent.md; do gzip -9 -n "$DOC/$f"; done

# 5. Ownership is root (dpkg-deb --root-owner-group); modes: directories 0755, files 0644, programs 0755.
find "$PKG" -type d -exec chmod 0755 {} +
find "$PKG" -type f -perm /111 -exec chmod 0755 {} +
find "$PKG" -type f ! -perm /111 -exec chmod 0644 {} +
# The entry points carry a shebang (they are package.json's bins): executable, as lintian expects.
chmod 0755 "$LIB/dist/agent/main.js" "$LIB/dist/firmware-sim/main.js"

# 6. Control files.
cp "$PKGDIR/conffiles" "$PKG/DEBIAN/conffiles"
for script in postinst prerm postrm; do install -m 0755 "$PKGDIR/$script" "$PKG/DEBIAN/$script"; done
# Shared libraries the native modules link against (libc6, libstdc++6, …), as dpkg-shlibdeps finds them.
mapfile -d '' natives < <(find "$LIB/node_modules" -name '*.node' -type f -print0)
shlibs=""
if [[ ${#natives[@]} -gt 0 ]]; then
  mkdir -p "$STAGE/shlibs/debian"
  printf 'Source: rackguard\n\nPackage: rackguard\nArchitecture: any\n' > "$STAGE/shlibs/debian/control"
  shlibs=$(cd "$STAGE/shlibs" && dpkg-shlibdeps -O "${natives[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  [[ -n $shlibs ]] || die "dpkg-shlibdeps found no library dependencies for ${natives[*]}"
fi
installed_size=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
  -e "s/, @SHLIBS_DEPENDS@/${shlibs:+, $shlibs}/" "$PKGDIR/control.in" > "$PKG/DEBIAN/control"
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/control" "$PKG/DEBIAN/conffiles" "$PKG/DEBIAN/md5sums"

mkdir -p "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >&2
log "built $DEB ($(du -h "$DEB" | cut -f1))"
printf '%s\n' "$DEB"
