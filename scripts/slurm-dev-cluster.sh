#!/usr/bin/env bash
# A private single-node Slurm cluster for trying pipe's Slurm executor by hand: the same cluster
# the tests start (tests/it/support/slurm.rs; both fill in tests/it/support/slurm.conf.in), but
# in the background and kept until `stop`.
#
#   scripts/slurm-dev-cluster.sh start [DIR]   # starts it, prints the `export SLURM_CONF=…` line
#   scripts/slurm-dev-cluster.sh status [DIR]
#   scripts/slurm-dev-cluster.sh stop [DIR]    # stops the daemons and removes DIR
#
# DIR defaults to ${TMPDIR:-/tmp}/pipe-slurm-dev-$USER. Needs the Debian packages slurmctld,
# slurmd, slurm-client and munge (apt-get install slurmctld slurmd slurm-client munge); runs as
# the current user, root or not. Its own munge key and socket, its own free ports: it does not
# touch the system's munged or /etc/slurm. No accounting (sacct needs slurmdbd), no cgroups.
set -euo pipefail

cmd="${1:-start}"
user="$(id -un)"
dir="${2:-${TMPDIR:-/tmp}/pipe-slurm-dev-$user}"
PATH="$PATH:/usr/sbin:/usr/local/sbin:/sbin"

die() { echo "error: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
  for d in slurmd slurmctld munged; do
    if alive "$dir/$d.pid"; then kill "$(cat "$dir/$d.pid")" || true; fi
  done
  for _ in $(seq 50); do
    alive "$dir/slurmd.pid" || alive "$dir/slurmctld.pid" || alive "$dir/munged.pid" || break
    sleep 0.1
  done
}

case "$cmd" in
  stop)
    [ -f "$dir/slurm.conf" ] || die "no cluster in $dir"
    stop
    rm -rf "$dir"
    echo "stopped; removed $dir"
    exit 0
    ;;
  status)
    [ -f "$dir/slurm.conf" ] || die "no cluster in $dir"
    for d in munged slurmctld slurmd; do
      if alive "$dir/$d.pid"; then echo "$d: running (pid $(cat "$dir/$d.pid"))"; else echo "$d: not running"; fi
    done
    SLURM_CONF="$dir/slurm.conf" sinfo
    echo "export SLURM_CONF=$dir/slurm.conf"
    exit 0
    ;;
  start) ;;
  *) die "unknown command '$cmd' (start, status, stop)" ;;
esac

for p in munged slurmctld slurmd sbatch sinfo scontrol squeue scancel; do
  command -v "$p" >/dev/null || die "$p not found; help: apt-get install slurmctld slurmd slurm-client munge"
done
template="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/it/support/slurm.conf.in"
[ -f "$template" ] || die "$template not found (the script runs from its checkout)"
if alive "$dir/slurmctld.pid"; then
  die "a cluster already runs in $dir (scripts/slurm-dev-cluster.sh stop${2:+ $2} first)"
fi
rm -rf "$dir"
# munged wants every directory above its socket searchable by all and its key's directory private.
mkdir -p "$dir"/{munge,munge-key,state,spool,log}
chmod 755 "$dir" "$dir/munge" "$dir/log"
chmod 700 "$dir/munge-key"
head -c 1024 /dev/urandom > "$dir/munge-key/munge.key"
chmod 600 "$dir/munge-key/munge.key"

node="$(cut -d. -f1 /proc/sys/kernel/hostname)"
hw="$(env -u SLURM_CONF slurmd -C | head -1)"
real_cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
real_mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
cpus=$(( real_cpus > 8 ? real_cpus : 8 ))
mem=$(( real_mem * 9 / 10 > 1024 ? real_mem * 9 / 10 : 1024 ))

# A free port: nothing answers a connection to it (a bash /dev/tcp probe).
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}
ctld_port="$(free_port)"
slurmd_port="$(free_port)"
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done

# The value as sed's replacement text: \, & and the | delimiter escaped.
lit() { printf '%s' "$1" | sed 's/[\\&|]/\\&/g'; }
sed -e "s|@DIR@|$(lit "$dir")|g" -e "s|@NODE@|$(lit "$node")|g" -e "s|@USER@|$(lit "$user")|g" \
  -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY@|$mem|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
  -e "s|@SLURMD_PORT@|$slurmd_port|g" -e "s|@PARTITION@|pipe|g" "$template" > "$dir/slurm.conf"
if left="$(grep -oE '@[A-Z_]+@' "$dir/slurm.conf")"; then
  die "$template has a placeholder this script does not fill: $(head -1 <<<"$left")"
fi

export SLURM_CONF="$dir/slurm.conf"

munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge-key/munge.key" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge-key/munged.seed" \
  || die "munged did not start (see $dir/log/munged.log)"
# Without -D the daemons detach themselves and write their pid files.
slurmctld || die "slurmctld did not start (see $dir/log/slurmctld.log)"
slurmd || die "slurmd did not start (see $dir/log/slurmd.log)"

for _ in $(seq 300); do
  [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ] && break
  sleep 0.1
done
if [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" != idle ]; then
  tail -n 20 "$dir"/log/*.log >&2 || true
  stop
  die "the node did not become idle within 30 s (logs above)"
fi
sinfo
echo
echo "# cluster in $dir (slurmctld port $ctld_port); stop it with: $0 stop${2:+ $2}"
echo "export SLURM_CONF=$dir/slurm.conf"
