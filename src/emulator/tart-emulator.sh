#!/usr/bin/env bash
# A Linux stand-in for the subset of the Tart CLI that Marina drives, used by
# emulated Mac hosts. It is NOT macOS and NOT Tart: a "VM" is a directory whose
# "guest" is an sshd bound to its own loopback address; scripts run as real bash
# processes tagged with MARINA_EMU_VM so `stop` can find and kill them.
# Exit codes and messages follow Tart: 2 for missing/not-running/already-running VMs,
# 1 for other errors, and the 2-VM limit of Apple's licence is enforced.
set -uo pipefail

TART_HOME="${TART_HOME:-$HOME/.tart}"
VMS="$TART_HOME/vms"
NET="${MARINA_EMU_NET:-127.77.0}"
VM_PORT="${MARINA_EMU_VM_PORT:-2222}"
BOOT_SECONDS="${MARINA_EMU_BOOT_SECONDS:-1}"
MAX_VMS="${MARINA_EMU_MAX_VMS:-2}"
SSHD="${MARINA_EMU_SSHD:-/usr/sbin/sshd}"
mkdir -p "$VMS"
# Real Tart traces itself with OpenTelemetry when TRACEPARENT is set; the stand-in only notes the parent
# it was given, one line per command, so a test can see a job's trace reach the hypervisor.
if [ -n "${TRACEPARENT:-}" ]; then echo "$TRACEPARENT ${1:-}" >> "$TART_HOME/traceparents.log"; fi

die() { local code=$1; shift; echo "Error: $*" >&2; exit "$code"; }
vmdir() { echo "$VMS/$1"; }
exists() { [ -f "$(vmdir "$1")/config.env" ]; }
running() { local p; p="$(vmdir "$1")/run.pid"; [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }
need() { exists "$1" || die 2 "the specified VM \"$1\" does not exist"; }
# Alive and not a zombie: a detached `tart run` belongs to init once its SSH session ends, and this
# machine's init may take a second to reap it (launchd on a Mac does at once).
alive() { local s; s=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }

# Serialises commands that check-then-act on shared state (start count, clone target).
lock() { until mkdir "$TART_HOME/.lock" 2>/dev/null; do
  local holder; holder=$(cat "$TART_HOME/.lock/pid" 2>/dev/null || true)
  if [ -n "$holder" ] && ! kill -0 "$holder" 2>/dev/null; then rm -rf "$TART_HOME/.lock"; fi
  sleep 0.05; done; echo $$ > "$TART_HOME/.lock/pid"; }
unlock() { rm -rf "$TART_HOME/.lock"; }

setcfg() { # setcfg vm key value
  local f; f="$(vmdir "$1")/config.env"
  grep -v "^$2=" "$f" > "$f.tmp" || true; echo "$2=$3" >> "$f.tmp"; mv "$f.tmp" "$f"; }
getcfg() { grep "^$2=" "$(vmdir "$1")/config.env" | tail -1 | cut -d= -f2-; }

# shellcheck source=emu-guest.sh
. "$(dirname "$(readlink -f "$0")")/emu-guest.sh"

cmd_list() {
  local fmt=text quiet=0
  while [ $# -gt 0 ]; do case $1 in --format) fmt=$2; shift 2;; -q|--quiet) quiet=1; shift;; --source) shift 2;; *) shift;; esac; done
  local first=1 name state
  [ "$fmt" = json ] && printf '['
  [ "$fmt" = text ] && [ $quiet = 0 ] && echo "Source Name Disk Size Accessed State"
  for d in "$VMS"/*/; do
    [ -f "$d/config.env" ] || continue
    name=$(basename "$d"); state=stopped; running "$name" && state=running
    if [ "$fmt" = json ]; then
      [ $first = 1 ] || printf ','; first=0
      printf '{"Source":"local","Name":"%s","Disk":%s,"Size":0,"Accessed":"%s","Running":%s,"State":"%s"}' \
        "$name" "$(getcfg "$name" disk)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$([ $state = running ] && echo true || echo false)" "$state"
    elif [ $quiet = 1 ]; then echo "$name"
    else echo "local $name $(getcfg "$name" disk) 0 now $state"; fi
  done
  [ "$fmt" = json ] && echo ']'
  return 0
}

cmd_clone() {
  local src=$1 dst=$2
  case $dst in */*) die 1 "VM name \"$dst\" must not contain /";; esac
  exists "$src" || die 1 "the specified VM \"$src\" does not exist (remote images are not emulated; import it first)"
  lock
  if exists "$dst"; then unlock; die 1 "the specified VM \"$dst\" already exists"; fi
  local tmp="$VMS/.tmp-$dst-$$"
  cp -a "$(vmdir "$src")" "$tmp" && rm -f "$tmp/run.pid" "$tmp/ip" && mv "$tmp" "$(vmdir "$dst")"
  unlock
}

cmd_set() {
  local vm=$1; shift; need "$vm"
  while [ $# -gt 0 ]; do case $1 in
    --cpu) setcfg "$vm" cpu "$2"; shift 2;;
    --memory) setcfg "$vm" memory "$2"; shift 2;;
    --disk-size) setcfg "$vm" disk "$2"; shift 2;;
    --random-mac) setcfg "$vm" mac "$(od -An -N5 -tx1 /dev/urandom | tr -s ' ' ':' | sed 's/^:/7e:/')"; shift;;
    --display) shift 2;;
    *) die 64 "unknown option $1";;
  esac; done
}

allocate_ip() { # first address on this host's emulated NAT network not held by a running VM
  local n used
  for n in $(seq 2 254); do
    used=0
    for d in "$VMS"/*/; do
      for f in "$d/ip" "$d/ip.pending"; do
        [ -f "$f" ] && [ "$(cat "$f")" = "$NET.$n" ] && running "$(basename "$d")" && used=1
      done
    done
    [ $used = 0 ] && { echo "$NET.$n"; return; }
  done
  die 1 "no free address on $NET.0/24"
}

cmd_run() {
  local vm="" a dirs=() args=()
  for a in "$@"; do case $a in --dir=*) dirs+=("${a#--dir=}");; --no-graphics) ;; --*) args+=("$a");; *) vm=$a;; esac; done
  need "$vm"; local d; d=$(vmdir "$vm")
  # Shared directories as Tart would mount them (name:path[:ro]), and other run options (devices), for tests to inspect.
  printf '%s\n' "${dirs[@]}" > "$d/dirs"
  printf '%s\n' "${args[@]}" > "$d/args"
  lock
  if running "$vm"; then unlock; die 2 "VM \"$vm\" is already running"; fi
  local others=() n
  for n in $(ls "$VMS"); do [ "$n" != "$vm" ] && exists "$n" && running "$n" && others+=("$n"); done
  if [ ${#others[@]} -ge "$MAX_VMS" ]; then unlock; die 1 "The number of VMs exceeds the system limit (other running VMs: ${others[*]})"; fi
  local ip; ip=$(allocate_ip)
  echo $$ > "$d/run.pid"; echo "$ip" > "$d/ip.pending"
  unlock
  run_guest "$d" "$ip" "$d/disk.img"
}

cmd_ip() {
  local vm="" wait=0
  while [ $# -gt 0 ]; do case $1 in --wait) wait=$2; shift 2;; --resolver) shift 2;; *) vm=$1; shift;; esac; done
  need "$vm"; local d; d=$(vmdir "$vm") deadline=$(( $(date +%s) + wait ))
  while :; do
    if running "$vm" && [ -f "$d/ip" ]; then cat "$d/ip"; return 0; fi
    [ "$(date +%s)" -ge "$deadline" ] && die 1 "no IP address found, is your VM running?"
    sleep 1
  done
}

cmd_stop() {
  local vm="" timeout=30
  while [ $# -gt 0 ]; do case $1 in -t|--timeout) timeout=$2; shift 2;; *) vm=$1; shift;; esac; done
  need "$vm"; running "$vm" || die 2 "VM \"$vm\" is not running"
  local d pid i; d=$(vmdir "$vm"); pid=$(cat "$d/run.pid")
  # Tart sends SIGINT, which makes Virtualization.framework power the guest off; a shell started in the
  # background ignores SIGINT and cannot trap it, so the stand-in's power-off is SIGUSR1 (see emu-guest.sh).
  kill -USR1 "$pid" 2>/dev/null
  for i in $(seq 1 $((timeout * 50))); do alive "$pid" || break; sleep 0.02; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; kill_vm_processes "$d" KILL; rm -f "$d/run.pid" "$d/ip"; fi
  return 0
}

cmd_delete() {
  local vm
  for vm in "$@"; do
    need "$vm"; running "$vm" && die 1 "VM \"$vm\" is running"
    rm -rf "$(vmdir "$vm")"
  done
}

cmd_get() {
  local vm=$1; need "$vm"
  local state=stopped; running "$vm" && state=running
  printf '{"OS":"darwin","CPU":%s,"Memory":%s,"Disk":%s,"DiskFormat":"raw","Size":"0.001","Display":"1024x768","Running":%s,"State":"%s"}\n' \
    "$(getcfg "$vm" cpu)" "$(getcfg "$vm" memory)" "$(getcfg "$vm" disk)" "$([ $state = running ] && echo true || echo false)" "$state"
}

cmd_import() { # tart import <archive> <name>: the archive is a tar.gz of a VM directory
  local archive=$1 vm=$2 tmp="$VMS/.tmp-import-$2-$$"
  lock
  if exists "$vm"; then unlock; die 1 "the specified VM \"$vm\" already exists"; fi
  mkdir -p "$tmp" && tar -xzf "$archive" -C "$tmp" && [ -f "$tmp/config.env" ] && mv "$tmp" "$(vmdir "$vm")"
  local rc=$?; rm -rf "$tmp"; unlock
  [ $rc = 0 ] || die 1 "cannot import $archive: not a VM archive"
}

cmd_export() { # tart export <name> <archive>
  local vm=$1 archive=$2; need "$vm"; running "$vm" && die 1 "VM \"$vm\" is running"
  tar -czf "$archive.tmp" -C "$(vmdir "$vm")" --exclude=run.pid --exclude=ip --exclude=login --exclude=sshd_config . && mv "$archive.tmp" "$archive"
}

[ $# -ge 1 ] || die 64 "usage: tart <command>"
sub=$1; shift
case $sub in
  --version) echo "2.30.0 (marina emulator: Linux stand-in, not Tart)";;
  list) cmd_list "$@";;
  clone) cmd_clone "$@";;
  set) cmd_set "$@";;
  run) cmd_run "$@";;
  ip) cmd_ip "$@";;
  stop) cmd_stop "$@";;
  delete) cmd_delete "$@";;
  get) cmd_get "$@";;
  import) cmd_import "$@";;
  export) cmd_export "$@";;
  *) die 64 "unknown or unemulated command: $sub";;
esac
