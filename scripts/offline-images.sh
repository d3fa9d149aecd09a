#!/usr/bin/env bash
# Builds, without any container registry, the images that claude-bottle would
# otherwise pull: the Debian base of the bottle image (with debootstrap) and the
# pinned pipelock sidecar (from the Go module proxy). Each is tagged with exactly
# the name the product uses, so the product finds it locally and never pulls.
# An image that already exists is left alone.
#
#   scripts/offline-images.sh [base] [pipelock]     (default: both)
#
# Environment: CLAUDE_BOTTLE_CA_CERT=FILE adds a CA bundle to the pipelock
# image (the host's bundle is always included); DEBIAN_MIRROR overrides the
# Debian mirror debootstrap uses.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
read -r base_image _ pipelock_image pipelock_version < <(PYTHONPATH="$here/src" python3 -m claude_bottle.pins)

# The Go module proxy serves pipelock by commit only: its module path has no
# /v2 suffix, so "@v2.3.0" is refused and "@latest" silently gives v1.5.0.
declare -A pipelock_commits=(
  [2.3.0]=7a3b7de4a5552b4e756eb930256468b7cbd616b1
)

say() { printf 'offline-images: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

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
  rootfs=$(mktemp -d /tmp/claude-bottle-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
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

build_pipelock() {
  if have_image "$pipelock_image"; then say "$pipelock_image already present"; return; fi
  local commit=${pipelock_commits[$pipelock_version]:-}
  [[ -n $commit ]] || die "no known commit for pipelock $pipelock_version: add it to pipelock_commits in $0"
  command -v go >/dev/null || die "go not found: install Go to build pipelock from the module proxy"
  local ctx
  ctx=$(mktemp -d /tmp/claude-bottle-pipelock.XXXXXX)
  trap 'rm -rf "$ctx"' RETURN
  say "building pipelock $pipelock_version ($commit) from the Go module proxy"
  if ! CGO_ENABLED=0 GOBIN="$ctx" go install "github.com/luckyPipewrench/pipelock/cmd/pipelock@$commit" 2>"$ctx/go.log"; then
    cat "$ctx/go.log" >&2
    die "the Go module proxy did not serve pipelock $pipelock_version; see the error above"
  fi
  cat /etc/ssl/certs/ca-certificates.crt ${CLAUDE_BOTTLE_CA_CERT:+"$CLAUDE_BOTTLE_CA_CERT"} >"$ctx/ca-certificates.crt"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pipelock /pipelock
ENTRYPOINT ["/pipelock"]
EOF
  docker build -q -t "$pipelock_image" "$ctx" >/dev/null
  say "built $pipelock_image"
}

docker info >/dev/null 2>&1 || die "Docker daemon not reachable: start Docker first"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(base pipelock)
for t in "${targets[@]}"; do
  case $t in
    base) build_base ;;
    pipelock) build_pipelock ;;
    *) die "unknown image '$t': choose base or pipelock" ;;
  esac
done
