#!/usr/bin/env bash
# A Linux stand-in for the subset of Parallels Desktop's `prlctl` that Marina drives, used by emulated
# Mac hosts. It is NOT macOS and NOT Parallels Desktop: a "VM" is a .pvm folder (config.pvs, a
# harddisk.hdd holding DiskDescriptor.xml and the disk's .hds data file) whose "guest" is an sshd on its
# own loopback address (emu-guest.sh). Registered VMs are files in $PRL_HOME/vms/<uuid> naming their folder.
# Behaviour follows what Parallels' own tools rely on (shared/reference/parallels.md): the JSON of
# `list -a -f -j` and `list -i -j` (including Home left empty in the bulk listing), `start` returning once
# the VM runs, `clone --name --dst`, `register --regenerate-src-uuid`, the Shared network's lease file,
# and the 2-running-macOS-VM limit. Parallels documents no exit codes: errors exit 1 with a sentence on stderr.
set -uo pipefail

PRL_HOME="${PRL_HOME:-$HOME/.parallels}"
REG="$PRL_HOME/vms"
VMS_DEFAULT="$HOME/Parallels"
LEASES="${MARINA_PRL_LEASES:-$PRL_HOME/parallels_dhcp_leases}"
NET="${MARINA_EMU_NET:-127.77.0}"
VM_PORT="${MARINA_EMU_VM_PORT:-2222}"
BOOT_SECONDS="${MARINA_EMU_BOOT_SECONDS:-1}"
MAX_VMS="${MARINA_EMU_MAX_VMS:-2}"
SSHD="${MARINA_EMU_SSHD:-/usr/sbin/sshd}"
HDS='harddisk.hdd/harddisk.hdd.0.{5fbaabe3-6958-40ff-92a7-860e329aab41}.hds'
mkdir -p "$REG"
# shellcheck source=emu-guest.sh
. "$(dirname "$(readlink -f "$0")")/emu-guest.sh"

die() { echo "$*" >&2; exit 1; }
newuuid() { echo "{$(cat /proc/sys/kernel/random/uuid)}"; }
newmac() { printf '001C42%s' "$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)"; }
xget() { sed -n "s:.*<$2>\(.*\)</$2>.*:\1:p" "$1/config.pvs" | head -1; }
xset() { # xset DIR Tag value: the first <Tag> in config.pvs
  local v; v=$(printf '%s' "$3" | sed 's/[&:\\]/\\&/g')
  sed -i "0,/<$2>.*<\/$2>/s:<$2>.*</$2>:<$2>$v</$2>:" "$1/config.pvs"; }

lock() { until mkdir "$PRL_HOME/.lock" 2>/dev/null; do
  local holder; holder=$(cat "$PRL_HOME/.lock/pid" 2>/dev/null || true)
  if [ -n "$holder" ] && ! kill -0 "$holder" 2>/dev/null; then rm -rf "$PRL_HOME/.lock"; fi
  sleep 0.05; done; echo $$ > "$PRL_HOME/.lock/pid"; }
unlock() { rm -rf "$PRL_HOME/.lock"; }

uuids() { local f; for f in "$REG"/*; do [ -f "$f" ] && basename "$f"; done; }
home_of() { cat "$REG/$1"; }
# find_vm NAME|UUID -> uuid of the registered VM, as prlctl accepts either
find_vm() {
  local u want=$1
  for u in $(uuids); do
    if [ "$u" = "$want" ] || [ "$u" = "{$want}" ] || [ "$(xget "$(home_of "$u")" VmName)" = "$want" ]; then echo "$u"; return 0; fi
  done
  return 1
}
need() { find_vm "$1" || die "Failed to get VM config: The virtual machine could not be found."; }
running() { local p; p="$(home_of "$1")/run.pid"; [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }
state() { running "$1" && echo running || echo stopped; }
ip_of() { local f; f="$(home_of "$1")/ip"; if running "$1" && [ -f "$f" ]; then cat "$f"; else echo -; fi; }
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

cmd_list() {
  local all=0 info=0 json=0 header=1 one="" u
  while [ $# -gt 0 ]; do case $1 in
    -a|--all) all=1;; -i|--info) info=1;; -j|--json) json=1;; -f|--full) ;; --no-header) header=0;;
    -o|--output) shift;; -*) die "Unrecognized option: $1";; *) one=$1;; esac; shift; done
  local list=()
  if [ -n "$one" ]; then u=$(need "$one") || exit 1; list=("$u")
  else for u in $(uuids); do { [ $all = 1 ] || running "$u"; } && list+=("$u"); done; fi
  if [ $json = 0 ]; then
    [ $header = 1 ] && printf '%-40s %-12s %-15s %s\n' UUID STATUS IP_ADDR NAME
    for u in "${list[@]}"; do printf '%-40s %-12s %-15s %s\n' "$u" "$(state "$u")" "$(ip_of "$u")" "$(xget "$(home_of "$u")" VmName)"; done
    return 0
  fi
  local first=1 d; printf '['
  for u in "${list[@]}"; do
    d=$(home_of "$u"); [ $first = 1 ] || printf ','; first=0
    if [ $info = 0 ]; then
      printf '{"uuid":%s,"status":"%s","ip_configured":"%s","name":%s}' "$(jstr "$u")" "$(state "$u")" "$(ip_of "$u")" "$(jstr "$(xget "$d" VmName)")"
    else
      # As Parallels Desktop does, the bulk listing leaves Home empty; asking for one VM gives it.
      local home=""; [ -n "$one" ] && home="$d/"
      printf '{"ID":%s,"Name":%s,"Description":"","Type":"VM","State":"%s","OS":"macosx","Template":"no","Uptime":"0","Home path":%s,"Home":%s,"GuestTools":{"state":"installed"},"Startup and Shutdown":{"Startup view":"%s"},"Hardware":{"cpu":{"cpus":%s,"auto":"off"},"memory":{"size":"%sMb","auto":"off"},"hdd0":{"enabled":true,"port":"sata:0","image":%s,"type":"expanded","size":"%sMb"},"net0":{"enabled":true,"type":"shared","mac":"%s","card":"virtio"}},"Host Shared Folders":{"enabled":true%s}}' \
        "$(jstr "$u")" "$(jstr "$(xget "$d" VmName)")" "$(state "$u")" "$(jstr "$home")" "$(jstr "$home")" "$(xget "$d" View)" \
        "$(xget "$d" Number)" "$(xget "$d" RAM)" "$(jstr "$d/harddisk.hdd")" "$(xget "$d" Size)" "$(xget "$d" MAC)" \
        "$(grep -o '<SharedFolder [^>]*/>' "$d/config.pvs" | sed 's|<SharedFolder name="\([^"]*\)" path="\([^"]*\)" mode="\([^"]*\)"/>|,"\1":{"enabled":true,"path":"\2","mode":"\3"}|' | tr -d '\n')"
    fi
  done
  echo ']'
}

cmd_register() {
  local path="" mode=preserve u
  while [ $# -gt 0 ]; do case $1 in
    --preserve-uuid) mode=preserve;; --regenerate-src-uuid) mode=regenerate;; --uuid) mode="uuid:$2"; shift;;
    --force|--delay-applying-restrictions) ;; -*) die "Unrecognized option: $1";; *) path=${1%/};; esac; shift; done
  [ -f "$path/config.pvs" ] || die "Failed to register the VM: $path is not a virtual machine (no config.pvs)."
  path=$(cd "$path" && pwd)
  lock
  for u in $(uuids); do [ "$(home_of "$u")" = "$path" ] && { unlock; die "Failed to register the VM: the virtual machine $path is already registered."; }; done
  case $mode in
    regenerate) u=$(newuuid); xset "$path" VmUuid "$u";;
    uuid:*) u=${mode#uuid:}; xset "$path" VmUuid "$u";;
    *) u=$(xget "$path" VmUuid); [ -n "$u" ] || { u=$(newuuid); xset "$path" VmUuid "$u"; };;
  esac
  [ -f "$REG/$u" ] && { unlock; die "Failed to register the VM: a virtual machine with UUID $u is already registered."; }
  echo "$path" > "$REG/$u"
  unlock
  echo "The VM has been successfully registered."
}

cmd_unregister() { local u; u=$(need "$1") || exit 1; rm -f "$REG/$u"; echo "The VM has been successfully unregistered."; }

cmd_clone() {
  local src=$1 name="" dst="$VMS_DEFAULT"; shift
  while [ $# -gt 0 ]; do case $1 in
    -n|--name) name=$2; shift;; --dst) dst=$2; shift;; --linked|--regenerate-src-uuid) ;; --id) shift;;
    *) die "Unrecognized option: $1";; esac; shift; done
  [ -n "$name" ] || die "Failed to clone the VM: give the new VM's name with --name."
  case $name in */*) die "Failed to clone the VM: invalid name \"$name\".";; esac
  local s; s=$(need "$src") || exit 1
  running "$s" && die "Failed to clone the VM: the virtual machine \"$src\" is running; stop it first."
  lock
  find_vm "$name" >/dev/null && { unlock; die "Failed to clone the VM: a virtual machine with the name \"$name\" already exists."; }
  mkdir -p "$dst"
  local to="$dst/$name.pvm" tmp="$dst/.$name.pvm.tmp-$$" u
  [ -e "$to" ] && { unlock; die "Failed to clone the VM: $to already exists."; }
  unlock
  echo "Clone the $src VM to the $name VM..."
  cp -a "$(home_of "$s")" "$tmp" || { rm -rf "$tmp"; die "Failed to clone the VM: cannot copy its files."; }
  rm -f "$tmp/run.pid" "$tmp/ip" "$tmp/ip.pending" "$tmp/login" "$tmp/sshd_config" "$tmp/parallels.log" "$tmp/.complete"
  u=$(newuuid); xset "$tmp" VmUuid "$u"; xset "$tmp" VmName "$name"; xset "$tmp" MAC "$(newmac)"
  lock
  mv "$tmp" "$to" && echo "$to" > "$REG/$u"
  unlock
  echo "The VM has been successfully cloned."
}

cmd_set() {
  local u d; u=$(need "$1") || exit 1; d=$(home_of "$u"); shift
  while [ $# -gt 0 ]; do case $1 in
    --cpus) running "$u" && die "Unable to set the CPU count: the VM is running."; xset "$d" Number "$2"; shift;;
    --memsize) running "$u" && die "Unable to set the memory size: the VM is running."; xset "$d" RAM "$2"; shift;;
    --name) find_vm "$2" >/dev/null && [ "$(find_vm "$2")" != "$u" ] && die "Unable to rename: the name \"$2\" is taken."; xset "$d" VmName "$2"; shift;;
    --startup-view) xset "$d" View "$2"; shift;;
    --on-window-close|--on-shutdown|--autostart|--autostop|--description|--shf-host) shift;;
    --device-set) case $2 in net0) [ "${3:-}" = --mac ] || die "Unrecognized option: ${3:-}"
        if [ "$4" = auto ]; then xset "$d" MAC "$(newmac)"; else xset "$d" MAC "$4"; fi; shift 3;;
      *) die "Unemulated device: $2";; esac;;
    --shf-host-add) local n=$2 p="" m=rw; shift 2
      while [ $# -gt 0 ]; do case $1 in --path) p=$2; shift 2;; --mode) m=$2; shift 2;; --enable) shift;; *) break;; esac; done
      [ -n "$p" ] || die "Failed to add the shared folder: give its --path."
      case "$n$p$m" in *[\"\<\>\&:\\]*) die "Failed to add the shared folder: unsupported character in \"$n\" or \"$p\".";; esac
      sed -i "s:</Hardware>:<SharedFolder name=\"$n\" path=\"$p\" mode=\"$m\"/></Hardware>:" "$d/config.pvs"; continue;;
    --shf-host-del) case $2 in *[\"\<\>\&:\\]*) die "Failed to remove the shared folder: no folder \"$2\".";; esac
      sed -i "s:<SharedFolder name=\"$2\" [^>]*/>::g" "$d/config.pvs"; shift;;
    *) die "Unrecognized option: $1";;
  esac; shift; done
  echo "The VM has been successfully configured."
}

allocate_ip() { # first address on this host's emulated Shared network not held by a running VM
  local n used u f
  for n in $(seq 2 254); do
    used=0
    for u in $(uuids); do for f in "$(home_of "$u")/ip" "$(home_of "$u")/ip.pending"; do
      [ -f "$f" ] && [ "$(cat "$f")" = "$NET.$n" ] && running "$u" && used=1; done; done
    [ $used = 0 ] && { echo "$NET.$n"; return; }
  done
  die "Failed to start the VM: no free address on the Shared network."
}

cmd_start() {
  local u d; u=$(need "$1") || exit 1; d=$(home_of "$u")
  lock
  running "$u" && { unlock; die "Failed to start the VM: the VM is already running."; }
  local others=() o
  for o in $(uuids); do [ "$o" != "$u" ] && running "$o" && others+=("$(xget "$(home_of "$o")" VmName)"); done
  if [ ${#others[@]} -ge "$MAX_VMS" ]; then unlock
    die "Failed to start the VM: the limit of $MAX_VMS running macOS virtual machines is reached (running: ${others[*]})."; fi
  local ip; ip=$(allocate_ip) || { unlock; exit 1; }
  echo "$ip" > "$d/ip.pending"
  # The VM runs on in Parallels' service after prlctl exits: here, a detached process of this script.
  setsid nohup "$0" __run "$u" "$ip" >> "$d/parallels.log" 2>&1 < /dev/null &
  echo $! > "$d/run.pid"
  unlock
  # A lease on the Shared network for the VM's MAC, as Parallels' DHCP writes it (expiry,leasetime,mac,clientid).
  local now; now=$(date +%s)
  echo "$ip=\"$((now + 1800)),1800,$(xget "$d" MAC | tr A-F a-f),01$(xget "$d" MAC | tr A-F a-f)\"" >> "$LEASES"
  echo "Starting the VM..."
  echo "VM $(xget "$d" VmName) started."
}

cmd_run_vm() { # internal: the VM process
  local u=$1 ip=$2 d; d=$(home_of "$u")
  echo "$(date -u +%FT%TZ) marina emulator (not Parallels Desktop): VM $u starting on $ip"
  run_guest "$d" "$ip" "$d/$HDS"
}

cmd_stop() {
  local vm="" kill=0 u d pid i
  while [ $# -gt 0 ]; do case $1 in --kill) kill=1;; --drop-state|--acpi|--noforce) ;; *) vm=$1;; esac; shift; done
  u=$(need "$vm") || exit 1; d=$(home_of "$u")
  running "$u" || die "Failed to stop the VM: the VM is not running."
  pid=$(cat "$d/run.pid")
  if [ $kill = 1 ]; then kill -KILL "$pid" 2>/dev/null; kill_vm_processes "$d" KILL; rm -f "$d/run.pid" "$d/ip" "$d/ip.pending"
  else
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "Failed to stop the VM: the guest did not shut down."
  fi
  echo "VM $(xget "$d" VmName) stopped."
}

cmd_delete() {
  local u d; u=$(need "$1") || exit 1; d=$(home_of "$u")
  running "$u" && die "Failed to delete the VM: the VM is running; stop it first."
  rm -rf "$d"; rm -f "$REG/$u"
  echo "The VM has been successfully deleted."
}

cmd_status() {
  local u; u=$(need "$1") || exit 1
  echo "VM $(xget "$(home_of "$u")" VmName) exist $(state "$u")"
}

[ $# -ge 1 ] || die "Usage: prlctl <command> ..."
sub=$1; shift
case $sub in
  --version|-V) echo "prlctl version 20.1.0 (55732) (marina emulator: Linux stand-in, not Parallels Desktop)";;
  list) cmd_list "$@";;
  register) cmd_register "$@";;
  unregister) cmd_unregister "$@";;
  clone) cmd_clone "$@";;
  set) cmd_set "$@";;
  start) cmd_start "$@";;
  __run) cmd_run_vm "$@";;
  stop) cmd_stop "$@";;
  resume) need "$1" > /dev/null || exit 1; echo "The VM has been successfully resumed.";;
  delete) cmd_delete "$@";;
  status) cmd_status "$@";;
  *) die "Unrecognized or unemulated command: $sub (marina emulator: Linux stand-in, not Parallels Desktop)";;
esac
