#!/usr/bin/env bash
# A real Temporal cluster on this machine: the Temporal server and its SQL schema tool built from the Go module
# go.temporal.io/server (version in deploy/cluster/temporal-server.version) through the Go module proxy, on
# PostgreSQL from Debian. Nothing of the server is vendored: `go install` builds it into a cache shared by every
# clone on the machine (~/.cache/marina, or $MARINA_CLUSTER_CACHE), so only the first build is slow.
#   bash scripts/cluster.sh build          install PostgreSQL if missing, build the server (cached)
#   bash scripts/cluster.sh start [DIR]    start PostgreSQL + Temporal server (state in DIR, default .marina/cluster)
#   bash scripts/cluster.sh stop [DIR]     stop both (the database stays; `stop --rm` deletes it)
#   bash scripts/cluster.sh test [FILES]   build, then run test/cluster/ against a fresh cluster and two workers
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "cluster: $*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
VERSION=$(tr -d '[:space:]' < deploy/cluster/temporal-server.version)
OUT="${MARINA_CLUSTER_CACHE:-$HOME/.cache/marina}/temporal-server-$VERSION"
GO=$(command -v go || echo /usr/local/go/bin/go)

build() {
  local pkgs=()
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v psql >/dev/null || pkgs+=(postgresql-client)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "apt-get install ${pkgs[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  if [ -x "$OUT/bin/server" ] && [ -x "$OUT/bin/sql" ] && [ -d "$OUT/schema/temporal/versioned" ]; then
    log "Temporal server $VERSION already built in $OUT"
    return
  fi
  local start=$SECONDS
  log "building Temporal server $VERSION and temporal-sql-tool with go install (first time: several minutes)"
  mkdir -p "$OUT/bin"
  # nice: the machine is shared; -mod=mod: no go.mod of ours is involved, the module's own go.sum pins it.
  GOFLAGS=-mod=mod GOBIN="$OUT/bin" nice -n 10 "$GO" install \
    "go.temporal.io/server/cmd/server@$VERSION" "go.temporal.io/server/cmd/tools/sql@$VERSION"
  # The schema files ship in the same module: copy them beside the binaries of that version.
  local mod
  mod=$(GOFLAGS=-mod=mod "$GO" mod download -json "go.temporal.io/server@$VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  rm -rf "$OUT/schema.tmp" && cp -r "$mod/schema/postgresql/v12" "$OUT/schema.tmp" && chmod -R u+w "$OUT/schema.tmp"
  rm -rf "$OUT/schema" && mv "$OUT/schema.tmp" "$OUT/schema"
  log "built $OUT in $((SECONDS - start)) s"
}

cmd=${1:-}
shift || true
case "$cmd" in
  build) build ;;
  start | stop)
    exec node --import tsx src/emulator/cluster-cli.ts "$cmd" "$@" ;;
  test)
    build
    start=$SECONDS
    rc=0
    npx vitest run -c vitest.cluster.config.mts "$@" || rc=$?
    log "test run: $((SECONDS - start)) s (exit $rc)"
    exit $rc ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2 ;;
esac
