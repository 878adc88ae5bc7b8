#!/usr/bin/env bash
# Builds the host-side image helper (helper/, Go) into .marina/helper/: static binaries for Mac
# hosts (darwin arm64 and amd64) and for this machine (the emulated hosts run it). Go modules come
# through the Go module proxy. Skips a platform whose binary is newer than the sources.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
[ -n "$GO" ] || { echo "build-helper: Go (1.25 or newer) is needed to build helper/; install it from go.dev/dl" >&2; exit 1; }
out="$PWD/.marina/helper"; mkdir -p "$out"
host="$($GO env GOOS)-$($GO env GOARCH)"
for platform in "$host" darwin-arm64 darwin-amd64; do
  bin="$out/marina-image-helper-$platform"
  if [ -f "$bin" ] && [ -z "$(find helper -newer "$bin" -type f | head -1)" ]; then continue; fi
  echo "build-helper: $platform" >&2
  (cd helper && CGO_ENABLED=0 GOOS=${platform%-*} GOARCH=${platform#*-} "$GO" build -trimpath -ldflags='-s -w' -o "$bin.tmp" . && mv "$bin.tmp" "$bin")
done
