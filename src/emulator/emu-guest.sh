# Shared by the Tart and Parallels stand-ins (sourced, not run): an emulated VM's "guest", an sshd on its
# own loopback address whose logins run as real bash processes tagged with MARINA_EMU_VM. NOT macOS.

kill_vm_processes() { # every process started inside the VM carries its directory in MARINA_EMU_VM
  local d=$1 sig=$2 f pid
  for f in $(grep -lzx "MARINA_EMU_VM=$d" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$pid" = "$$" ] || kill "-$sig" "$pid" 2>/dev/null || true
  done
}

# run_guest DIR IP DISK: boots the guest (after BOOT_SECONDS) and serves SSH until TERM/INT (a guest
# shutdown) or USR1 (a power-off); then kills
# everything that ran inside and clears DIR's run files. DIR/ip appears once SSH listens.
run_guest() {
  local d=$1 ip=$2 disk=$3 sshd_pid=""
  guest_shutdown() {
    rm -f "$d/ip" "$d/ip.pending"
    [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null
    kill_vm_processes "$d" TERM; sleep 0.2; kill_vm_processes "$d" KILL
    rm -f "$d/run.pid"; exit 0
  }
  # A power-off (Tart's stop: Virtualization.framework's hard stop()): nothing inside gets to react.
  guest_poweroff() {
    rm -f "$d/ip" "$d/ip.pending"
    [ -n "$sshd_pid" ] && kill -KILL "$sshd_pid" 2>/dev/null
    kill_vm_processes "$d" KILL
    rm -f "$d/run.pid"; exit 0
  }
  trap guest_shutdown INT TERM
  trap guest_poweroff USR1
  sleep "$BOOT_SECONDS" & wait $!
  cat > "$d/login" <<LOGIN
#!/usr/bin/env bash
export MARINA_EMU_VM='$d' MARINA_EMU_DISK='$disk' HOME='$d/root' USER=admin PATH=/usr/local/bin:/usr/bin:/bin
cd "\$HOME"
if [ -n "\${SSH_ORIGINAL_COMMAND:-}" ]; then exec /bin/bash -c "\$SSH_ORIGINAL_COMMAND"; else exec /bin/bash -l; fi
LOGIN
  chmod 755 "$d/login"
  cat > "$d/sshd_config" <<CONF
ListenAddress $ip:$VM_PORT
HostKey $d/ssh_host_ed25519_key
AuthorizedKeysFile $d/root/.ssh/authorized_keys
PidFile none
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding no
X11Forwarding no
ForceCommand $d/login
# Not this machine's ~/.bashrc (see mac-host.ts): the VM's login sets its own environment.
SetEnv SHLVL=1
# VERBOSE: tests read who authenticated (a host-key mismatch must end the handshake before any login).
LogLevel VERBOSE
CONF
  mkdir -p /run/sshd
  "$SSHD" -D -e -f "$d/sshd_config" &
  sshd_pid=$!
  mv "$d/ip.pending" "$d/ip"
  wait "$sshd_pid"
  guest_shutdown
}
