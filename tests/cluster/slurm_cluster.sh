#!/usr/bin/env bash
# A single-node Slurm cluster with accounting, for namexp's cluster tests (pytest -m cluster) and for trying
# sweeps through hydra/launcher=slurm on one machine.
#
#   tests/cluster/slurm_cluster.sh start    # install (Debian, root) if needed, start, check with srun
#   tests/cluster/slurm_cluster.sh status   # what runs, and the SLURM_CONF to export
#   tests/cluster/slurm_cluster.sh stop     # stop exactly the daemons this script started
#
# Why accounting: submitit polls job states with sacct, which needs slurmdbd (on MariaDB); without it a
# cancelled job is never seen as finished. The configs live in $NAMEXP_SLURM_STATE (default
# /tmp/namexp-slurm); /etc/slurm/slurm.conf is linked to ours when the machine has none, so plain sbatch works.
# Facts behind the settings: ../shared/docs/slurm-test-cluster.md (Slurm 22.05, Debian 12).
set -euo pipefail

STATE=${NAMEXP_SLURM_STATE:-/tmp/namexp-slurm}
PIDS=$STATE/started.pids # "name pid" of each daemon this script started: what stop kills
NODE=$(hostname -s)
export SLURM_CONF=$STATE/slurm.conf
DB_PASS=namexp-test

die() {
  echo "slurm_cluster.sh: $*" >&2
  exit 1
}

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  die "$what did not come up within ${seconds}s (logs: /var/log/slurm, $STATE)"
}

alive() { # alive PID COMM: the process still runs under that name (a reused pid is not ours)
  [ -n "$1" ] && [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm")" = "$2" ]
}

pid_from() { cat "$1" 2>/dev/null || true; }

install_packages() {
  local missing=()
  for cmd in sbatch slurmctld slurmd slurmdbd munged mariadbd; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "cannot install Slurm (missing: ${missing[*]}): no apt-get here; install slurm-wlm munge slurmdbd mariadb-server yourself"
  echo "installing slurm-wlm munge slurmdbd mariadb-server (about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null ||
    die "apt-get could not install slurm-wlm munge slurmdbd mariadb-server"
}

write_configs() {
  mkdir -p "$STATE" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown slurm: /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  local mem_mb
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
  cat >"$STATE/slurm.conf" <<EOF
ClusterName=namexp
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (default 120): short for the tests.
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
NodeName=$NODE CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$STATE/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chown slurm: "$STATE/slurmdbd.conf"
  chmod 600 "$STATE/slurmdbd.conf"
  # Plain sbatch/squeue find the cluster when the machine has no slurm.conf of its own.
  if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/slurm.conf" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf
  fi
}

started() { # started NAME PIDFILE COMM: remember a daemon this script started
  local pid
  for _ in $(seq 40); do # a daemon writes its pid file a moment after it forks
    pid=$(pid_from "$2")
    alive "$pid" "$3" && break
    sleep 0.25
  done
  alive "$pid" "$3" || die "$1 did not stay up (logs: /var/log/slurm, $STATE)"
  grep -qx "$1 $pid" "$PIDS" || echo "$1 $pid" >>"$PIDS"
}

start_munge() {
  alive "$(pid_from /run/munge/munged.pid)" munged && return 0
  [ -f /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge: /etc/munge/munge.key
  mkdir -p /run/munge && chown munge: /run/munge
  runuser -u munge -- munged
  wait_for 20 munged bash -c 'munge -n | unmunge'
  started munged /run/munge/munged.pid munged
}

start_mariadb() {
  if ! mysqladmin ping >/dev/null 2>&1; then
    mkdir -p /run/mysqld && chown mysql: /run/mysqld
    setsid mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid >"$STATE/mariadb.log" 2>&1 </dev/null &
    wait_for 60 mariadb mysqladmin ping
    started mariadbd /run/mysqld/mysqld.pid mariadbd
  fi
  mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurm() {
  if ! alive "$(pid_from /run/slurmdbd.pid)" slurmdbd; then
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    started slurmdbd /run/slurmdbd.pid slurmdbd
  fi
  if ! alive "$(pid_from /run/slurmctld.pid)" slurmctld; then
    slurmctld
    wait_for 60 slurmctld scontrol ping
    started slurmctld /run/slurmctld.pid slurmctld
  fi
  if ! alive "$(pid_from /run/slurmd.pid)" slurmd; then
    slurmd
    started slurmd /run/slurmd.pid slurmd
  fi
  # A node left DOWN (an earlier crash, a stop with jobs on it) takes jobs again.
  sleep 1
  if sinfo -h -n "$NODE" -o %T | grep -qiE 'down|drain'; then
    scontrol update nodename="$NODE" state=resume
  fi
  wait_for 60 "node $NODE" bash -c "sinfo -h -n $NODE -o %T | grep -qE '^(idle|mixed|allocated)'"
  wait_for 60 "the cluster's accounting" bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx namexp && sacct -n"
  timeout 60 srun -N1 -n1 true || die "srun -N1 -n1 true failed: the cluster is up but cannot run a job"
}

start() {
  [ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts munge, MariaDB and the Slurm daemons)"
  install_packages
  write_configs
  touch "$PIDS"
  start_munge
  start_mariadb
  start_slurm
  echo "Slurm test cluster up (node $NODE, partition debug); for sbatch/sacct elsewhere: export SLURM_CONF=$SLURM_CONF"
}

stop() {
  [ -f "$PIDS" ] || {
    echo "nothing to stop: this script started no daemon ($PIDS absent)"
    return 0
  }
  # Reverse start order: the Slurm daemons before the services they need.
  tac "$PIDS" | while read -r name pid; do
    if alive "$pid" "$name"; then
      kill "$pid"
      for _ in $(seq 120); do
        alive "$pid" "$name" || break
        sleep 0.25
      done
      if alive "$pid" "$name"; then kill -9 "$pid"; fi
      echo "stopped $name ($pid)"
    fi
  done
  rm -f "$PIDS"
}

status() {
  local up=0
  for pair in munged:/run/munge/munged.pid mariadbd:/run/mysqld/mysqld.pid slurmdbd:/run/slurmdbd.pid \
    slurmctld:/run/slurmctld.pid slurmd:/run/slurmd.pid; do
    local name=${pair%%:*} pid
    pid=$(pid_from "${pair#*:}")
    if alive "$pid" "$name"; then
      local mine=""
      grep -qx "$name $pid" "$PIDS" 2>/dev/null && mine=" (started by this script)"
      echo "$name: running, pid $pid$mine"
    else
      echo "$name: not running"
      up=1
    fi
  done
  [ $up -eq 0 ] && sinfo -h -o "partition %P: %D node(s) %T" && echo "export SLURM_CONF=$SLURM_CONF"
  return $up
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 {start|stop|status}" >&2
    exit 2
    ;;
esac
