#!/usr/bin/env bash
# A Linux stand-in for Parallels Desktop's `prl_disk_tool` (the `resize` and `info` Marina uses), NOT the
# real tool: a disk is a .hdd folder whose size (MiB) is kept in its bundle's config.pvs <Size>.
set -uo pipefail
die() { echo "$*" >&2; exit 1; }
sub=${1:-}; shift || true
hdd="" size=""
while [ $# -gt 0 ]; do case $1 in --hdd) hdd=${2%/}; shift 2;; --size) size=$2; shift 2;; *) die "Unrecognized option: $1";; esac; done
[ -d "$hdd" ] || die "Failed to open the disk $hdd: no such disk."
cfg="$(dirname "$hdd")/config.pvs"
now=$(sed -n 's:.*<Size>\(.*\)</Size>.*:\1:p' "$cfg" | head -1)
case $sub in
  info) echo "Disk: $hdd"; echo "Size: ${now}M"; echo "(marina emulator: Linux stand-in, not Parallels Desktop)";;
  resize)
    case $size in *G) mb=$(( ${size%G} * 1024 ));; *M) mb=${size%M};; *[0-9]) mb=$size;; *) die "Invalid size: $size";; esac
    [ "$mb" -ge "$now" ] || die "Failed to resize the disk: shrinking below ${now}M is not supported."
    sed -i "0,/<Size>.*<\/Size>/s:<Size>.*</Size>:<Size>$mb</Size>:" "$cfg"
    echo "The disk has been successfully resized to ${mb}M.";;
  *) die "Unrecognized or unemulated command: $sub (marina emulator: Linux stand-in, not Parallels Desktop)";;
esac
