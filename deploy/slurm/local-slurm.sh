#!/usr/bin/env bash
# A private single-node SLURM for tests and trials (Debian/Ubuntu, as root, no systemd).
#   deploy/slurm/local-slurm.sh start    install if needed (slurm-wlm, munge), configure, start
#   deploy/slurm/local-slurm.sh stop     stop exactly the daemons this script started
#   deploy/slurm/local-slurm.sh status
# State lives in $SLURM_LOCAL_DIR (default /tmp/spotlight-slurm). Never touches a site SLURM.
set -euo pipefail
D="${SLURM_LOCAL_DIR:-/tmp/spotlight-slurm}"
HOST="$(hostname -s)"
CONF="$D/etc/slurm.conf"

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "installing slurm needs root" >&2; exit 3; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

alive() {  # pidfile name -> running and really that daemon
  local f="$D/run/$1.pid"
  [ -f "$f" ] || return 1
  local pid; pid="$(cat "$f")"
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}

configure() {
  # cred_expire: a requeued job waits cred_expire + 1 s before it starts again (default 120):
  # 10 s lets the preemption test see the requeued run without a 2-minute pause;
  # sched_interval=2: the main scheduler then looks at such a job every 2 s (default 60)
  mkdir -p "$D"/{etc,run,log,state,spool} /run/munge
  chown munge:munge /run/munge; chmod 0755 /run/munge
  if [ ! -f /etc/munge/munge.key ]; then
    (command -v mungekey >/dev/null && mungekey --create) || \
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  fi
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  local topo; topo="$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //; s/ UpTime=.*//')"
  cat > "$CONF" <<CONF
ClusterName=spotlight
SlurmctldHost=${HOST}(127.0.0.1)
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerParameters=batch_sched_delay=0,sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 ${topo} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  install
  configure
  if ! alive munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "reusing the munged already running on this machine" >&2
  elif ! alive munged; then
    rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$D/run/munged.pid"
  fi
  export SLURM_CONF="$CONF"
  alive slurmctld || slurmctld -f "$CONF"
  alive slurmd || slurmd -f "$CONF" -N "$HOST"
  for _ in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "SLURM_CONF=$CONF"; return 0
    fi
    sleep 0.5
  done
  echo "SLURM did not come up; see $D/log" >&2; exit 1
}

stop() {
  export SLURM_CONF="$CONF"
  if alive slurmctld; then scancel --user="$(id -un)" 2>/dev/null || true; sleep 1; fi
  for d in slurmd slurmctld munged; do
    if alive "$d"; then kill "$(cat "$D/run/$d.pid")"; fi
    rm -f "$D/run/$d.pid"
  done
}

status() {
  for d in munged slurmctld slurmd; do
    if alive "$d"; then echo "$d running"; else echo "$d stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
