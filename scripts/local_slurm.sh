#!/usr/bin/env bash
# scripts/local_slurm.sh -- a real one-node Slurm cluster (munge, slurmctld, slurmd) on this machine.
#
#   sudo bash scripts/local_slurm.sh start     install (Debian/Ubuntu apt) if needed, configure, start
#   sudo bash scripts/local_slurm.sh stop      stop the daemons this script started (and nothing else)
#        bash scripts/local_slurm.sh status    what runs, the node's state
#
# For tests and CI: jobs submitted with sbatch run through the same controller,
# signals, requeue and srun steps as on a production cluster.  Idempotent: a
# second `start` finds its daemons alive and does nothing; `stop` kills only the
# pids it recorded in $LOCAL_SLURM_DIR (default /var/tmp/local_slurm).
#
# The node advertises 16 CPUs and 90 % of the real memory (SlurmdParameters=
# config_overrides), so launch_exp.sh's `--cpus-per-task=4 --mem=16G` header is
# accepted on a small machine.  It has no GPUs: submit with `sbatch --gres=none`
# (the command line overrides the `#SBATCH --gres=gpu:1` header).
# /etc/slurm/slurm.conf is written only when absent or written by this script
# before; a foreign one (a real cluster's) is never touched.
#
# Needs root (daemons, /etc/slurm, /run/munge).  Traps seen here: `scontrol
# requeue` holds a job ~120 s (release it with `scontrol update jobid=N
# StartTime=now`); sbatch --wait polls with back-off.
set -euo pipefail

STATE="${LOCAL_SLURM_DIR:-/var/tmp/local_slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/local_slurm.sh"
NODE="$(hostname -s)"

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: error: $*" >&2; exit 2; }

alive() {   # alive NAME: the recorded pid runs the recorded program
    local pidfile="${STATE}/$1.pid" pid
    [ -f "${pidfile}" ] || return 1
    pid="$(cat "${pidfile}")"
    [ -d "/proc/${pid}" ] || return 1
    # a killed daemon can linger as a zombie for a moment
    [ "$(awk '{print $3}' "/proc/${pid}/stat" 2>/dev/null)" != "Z" ] || return 1
    tr '\0' ' ' < "/proc/${pid}/cmdline" | grep -q "$1"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is missing; install munge, slurmctld, slurmd, slurm-client"
    say "installing munge and slurm (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurm-client >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0     # a munged already answers (ours from before, or the system's)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --force --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    setsid setpriv --reuid=munge --regid=munge --clear-groups /usr/sbin/munged -F \
        > "${STATE}/munged.log" 2>&1 < /dev/null &
    echo $! > "${STATE}/munged.pid"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged did not start (see ${STATE}/munged.log)"
}

write_conf() {
    if [ -f "${CONF}" ] && ! head -n 1 "${CONF}" | grep -qF "${MARK}"; then
        die "${CONF} exists and was not written by this script; refusing to replace a real cluster's configuration"
    fi
    local mem
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n 1)"
    mem=$(( ${mem:-4000} * 9 / 10 ))
    mkdir -p "${STATE}/ctld" "${STATE}/d" /etc/slurm
    cat > "${CONF}.tmp" <<EOF
${MARK} (a one-node test cluster; state in ${STATE})
ClusterName=local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldPidFile=${STATE}/slurmctld.daemon.pid
SlurmdPidFile=${STATE}/slurmd.daemon.pid
SlurmctldLogFile=${STATE}/slurmctld.log
SlurmdLogFile=${STATE}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${STATE}/jobcomp.txt
MailProg=/bin/true
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=16 RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    mv "${CONF}.tmp" "${CONF}"
}

start_daemon() {   # start_daemon NAME: run NAME -D detached, record its pid
    local name="$1"
    if alive "${name}"; then
        return 0
    fi
    setsid "/usr/sbin/${name}" -D > "${STATE}/${name}.out" 2>&1 < /dev/null &
    echo $! > "${STATE}/${name}.pid"
}

wait_for_node() {
    local st=""
    for _ in $(seq 100); do
        st="$(sinfo -h -N -n "${NODE}" -o %t 2>/dev/null | head -n 1 || true)"
        case "${st}" in idle|mix|alloc) say "node ${NODE} is ${st}"; return 0 ;; esac
        if [ "${st}" = "down" ] || [ "${st}" = "drain" ] || [ "${st}" = "inval" ]; then
            scontrol update nodename="${NODE}" state=resume >/dev/null 2>&1 || true
        fi
        sleep 0.3
    done
    die "node ${NODE} did not become idle (state '${st}'; see ${STATE}/slurmctld.log and slurmd.log)"
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die "start needs root (daemons, /etc/slurm, /run/munge)"
    mkdir -p "${STATE}"
    if alive slurmctld && alive slurmd; then
        say "already running (pids $(cat "${STATE}/slurmctld.pid") $(cat "${STATE}/slurmd.pid"))"
        wait_for_node
        return 0
    fi
    install_packages
    start_munge
    write_conf
    start_daemon slurmctld
    for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    start_daemon slurmd
    wait_for_node
}

stop_pid() {   # stop_pid NAME
    local name="$1" pid
    [ -f "${STATE}/${name}.pid" ] || return 0
    pid="$(cat "${STATE}/${name}.pid")"
    if alive "${name}"; then
        kill -TERM "${pid}" 2>/dev/null || true
        for _ in $(seq 50); do alive "${name}" || break; sleep 0.2; done
        if alive "${name}"; then kill -KILL "${pid}" 2>/dev/null || true; fi
        say "stopped ${name} (pid ${pid})"
    fi
    rm -f "${STATE}/${name}.pid"
}

cmd_stop() {
    [ -d "${STATE}" ] || { say "nothing to stop"; return 0; }
    # slurmd first (it reports to the controller), munged last (both use it)
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
}

cmd_status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "${name}"; then say "${name}: running (pid $(cat "${STATE}/${name}.pid"))"
        else say "${name}: not started by this script"; fi
    done
    if command -v sinfo >/dev/null; then sinfo -N 2>/dev/null || true; fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: bash scripts/local_slurm.sh start|stop|status" >&2; exit 2 ;;
esac
