#!/usr/bin/env bash
# Builds, without any container registry, the images that claude-bottle would
# otherwise pull: the Debian base of the bottle image (with debootstrap) and the
# pinned pipelock sidecar (from its source). Each is tagged with exactly the
# name the product uses, so the product finds it locally and never pulls. An
# image that already exists is left alone.
#
#   scripts/offline-images.sh [base] [pipelock] [--pipelock-source FILE]   (default: both)
#
# pipelock: with --pipelock-source (or PIPELOCK_SOURCE=FILE), built from that
# source archive of the pinned release after checking its sha256 against the one
# pinned in src/claude_bottle/pins.py; without it, pulled from its registry, or
# else built from the Go module proxy. Building needs Go >= 1.21 (it fetches the
# Go release pipelock asks for through the module proxy), or Debian's Go, which
# is used to fetch that release the same way.
#
# Environment: CLAUDE_BOTTLE_CA_CERT=FILE adds a CA bundle to the pipelock
# image (the host's bundle is always included); DEBIAN_MIRROR overrides the
# Debian mirror debootstrap uses.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
read -r base_image _ pipelock_image pipelock_version pipelock_commit pipelock_sha256 \
  < <(PYTHONPATH="$here/src" python3 -m claude_bottle.pins)

say() { printf 'offline-images: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Temporary folders, removed however the script ends.
scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT
# new_scratch VAR NAME: a new folder in VAR (not in a subshell, so the trap sees it)
new_scratch() { local d; d=$(mktemp -d "/tmp/claude-bottle-$2.XXXXXX"); scratch+=("$d"); printf -v "$1" %s "$d"; }

check_source() {
  [[ -f $pipelock_source ]] || die "--pipelock-source $pipelock_source: no such file"
  local sum
  sum=$(sha256sum "$pipelock_source" | awk '{print $1}')
  [[ $sum == "$pipelock_sha256" ]] ||
    die "--pipelock-source $pipelock_source: sha256 is $sum, but pipelock $pipelock_version's source archive has $pipelock_sha256 (pinned in src/claude_bottle/pins.py): use the unchanged archive of v$pipelock_version (git archive --prefix=pipelock-$pipelock_version/ v$pipelock_version, gzipped)"
}

build_base() {
  if have_image "$base_image"; then say "$base_image already present"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap not found: install it (apt-get install debootstrap)"
  # debian:bookworm-slim -> suite bookworm
  local tag=${base_image#*:}
  local suite=${tag%-slim}
  [[ ${base_image%%:*} == debian && -n $suite && $suite != "$base_image" ]] ||
    die "cannot build base image '$base_image' offline: only debian:<suite>[-slim] images are supported"
  local mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local rootfs
  new_scratch rootfs rootfs
  say "debootstrap $suite into $rootfs (about half a minute)"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
  # The same apt sources an official Debian image has, so security updates reach the bottle image.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$base_image" >/dev/null
  say "built $base_image"
}

# A go command able to build pipelock, whose go.mod asks for a newer Go than Debian ships: Go >= 1.21
# fetches the release go.mod names through the module proxy by itself; an older one (Debian 12's
# 1.19) is used once to download that release from the same proxy.
go_for() {
  local src=$1 want
  command -v go >/dev/null ||
    die "go not found: install Go (apt-get install golang-go, or https://go.dev/dl) to build pipelock"
  want=$(sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' "$src/go.mod")
  [[ -n $want ]] || die "cannot read the Go version from $src/go.mod"
  local have
  have=$(go env GOVERSION 2>/dev/null || go version | awk '{print $3}')
  have=${have#go}
  if printf '%s\n%s\n' "1.21" "$have" | sort -V -C; then
    GO=(env "GOTOOLCHAIN=go$want+auto" go)
    return
  fi
  say "Go $have cannot build pipelock (it needs $want): fetching Go $want through the module proxy"
  local arch dir
  arch=$(go env GOARCH)
  dir=$(GOFLAGS=-mod=mod go mod download -json "golang.org/toolchain@v0.0.1-go$want.linux-$arch" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -x $dir/bin/go ]] || die "could not fetch Go $want through the module proxy: install Go $want or newer"
  GO=(env GOTOOLCHAIN=local "$dir/bin/go")
}

# Builds the binary from an unpacked source tree into $2, with the release's version stamped in as
# upstream's build does.
build_pipelock_binary() {
  local src=$1 out=$2
  go_for "$src"
  say "building pipelock $pipelock_version with ${GO[*]: -1} (dependencies from the Go module proxy)"
  local pkg=github.com/luckyPipewrench/pipelock/internal
  if ! (cd "$src" && CGO_ENABLED=0 "${GO[@]}" build -trimpath -ldflags "-s -w \
        -X $pkg/cliutil.Version=$pipelock_version -X $pkg/proxy.Version=$pipelock_version" \
        -o "$out" ./cmd/pipelock) 2>"$out.log"; then
    tail -n 20 "$out.log" >&2
    die "building pipelock $pipelock_version failed; see the lines above"
  fi
}

# Wraps the binary as the official image is made (upstream Dockerfile): scratch, the CA bundle, the
# binary at /pipelock, the same entrypoint, default command and health check.
package_pipelock() {
  local ctx=$1
  cat /etc/ssl/certs/ca-certificates.crt ${CLAUDE_BOTTLE_CA_CERT:+"$CLAUDE_BOTTLE_CA_CERT"} >"$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pipelock /pipelock
EXPOSE 8888
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/pipelock", "healthcheck"]
ENTRYPOINT ["/pipelock"]
CMD ["run", "--listen", "0.0.0.0:8888"]
EOF
  docker build -q -t "$pipelock_image" "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; die "docker build of $pipelock_image failed"; }
  [[ $(docker run --rm "$pipelock_image" version 2>&1) == *"$pipelock_version"* ]] ||
    die "the image $pipelock_image was built but does not report version $pipelock_version"
  say "built $pipelock_image"
}

build_pipelock() {
  if have_image "$pipelock_image"; then say "$pipelock_image already present"; return; fi
  local ctx
  new_scratch ctx pipelock

  if [[ -n $pipelock_source ]]; then
    tar -xzf "$pipelock_source" -C "$ctx"
    local src="$ctx/pipelock-$pipelock_version"
    [[ -f $src/go.mod ]] || die "--pipelock-source $pipelock_source: no pipelock-$pipelock_version/go.mod inside"
    build_pipelock_binary "$src" "$ctx/pipelock"
    package_pipelock "$ctx"
    return
  fi

  say "pulling $pipelock_image"
  if docker pull -q "$pipelock_image" >"$ctx/pull.log" 2>&1; then say "pulled $pipelock_image"; return; fi
  say "pulling failed ($(tail -n 1 "$ctx/pull.log")); trying the Go module proxy"
  # The proxy serves pipelock by commit only: its module path has no /v2 suffix, so "@v2.3.0" is refused.
  command -v go >/dev/null || die "go not found, and $pipelock_image could not be pulled: install Go, or pass --pipelock-source FILE with pipelock $pipelock_version's source archive"
  if ! (cd "$ctx" && CGO_ENABLED=0 GOBIN="$ctx" go install \
        "github.com/luckyPipewrench/pipelock/cmd/pipelock@$pipelock_commit") 2>"$ctx/go.log"; then
    tail -n 5 "$ctx/go.log" >&2
    die "neither the registry nor the Go module proxy served pipelock $pipelock_version: get its source archive (git archive --prefix=pipelock-$pipelock_version/ v$pipelock_version, gzipped; sha256 $pipelock_sha256) and run: $0 pipelock --pipelock-source FILE"
  fi
  package_pipelock "$ctx"
}

targets=()
pipelock_source=${PIPELOCK_SOURCE:-}
while [[ $# -gt 0 ]]; do
  case $1 in
    --pipelock-source) [[ $# -ge 2 ]] || die "--pipelock-source needs a FILE"; pipelock_source=$2; shift 2 ;;
    --pipelock-source=*) pipelock_source=${1#*=}; shift ;;
    base|pipelock) targets+=("$1"); shift ;;
    *) die "unknown argument '$1': name base and/or pipelock, optionally with --pipelock-source FILE" ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(base pipelock)
# A bad archive is refused before anything else happens, even when the image is already here.
[[ -z $pipelock_source ]] || check_source
docker info >/dev/null 2>&1 || die "Docker daemon not reachable: start Docker first"
for t in "${targets[@]}"; do
  case $t in
    base) build_base ;;
    pipelock) build_pipelock ;;
  esac
done
