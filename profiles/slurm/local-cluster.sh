#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, to run the workflow through profiles/slurm
# without a lab cluster: the Slurm tests and bench/slurm_bench.py use it, and so can you.
#
#   profiles/slurm/local-cluster.sh start    # install what is missing, configure, start, smoke-test
#   profiles/slurm/local-cluster.sh status   # exit 0 only when every daemon runs and the node is up
#   profiles/slurm/local-cluster.sh stop     # cancel the cluster's jobs, stop its daemons
#
# Needs root on Debian 12 (slurm-wlm 22.05 and munge from the Debian archive); no systemd.
# `start` is idempotent: on a running cluster it does nothing (stop it first to change the
# settings below); otherwise it installs only the missing packages, writes the config, starts
# the daemons that are not running and runs a CPU and a GPU smoke test. `stop` ends only the
# daemons named in this cluster's pid files. No slurmdbd: the profile's `squeue` status checks
# need no accounting.
#
# Settings (environment, all optional):
#   VADBENCH_SLURM_ROOT        state, logs, pid files and munge key (default /tmp/vadbench-slurm)
#   VADBENCH_SLURM_CPUS        CPUs the node advertises (default: nproc)
#   VADBENCH_SLURM_GPUS        fake GPUs (gres gpu backed by /dev/null) (default 1; 0 = none)
#   VADBENCH_SLURM_GPU_TYPE    their model, as a cluster's typed GPUs have one (default "fake";
#                              jobs may ask for gpu:1 or gpu:fake:1)
#   VADBENCH_SLURM_PARTITIONS  partition names, the first is the default (default "main gpu");
#                              use your lab's names to try its profile settings unchanged
#
# The config goes to /etc/slurm, not to a $SLURM_CONF elsewhere: the Snakemake job step drops
# every SLURM_* variable before its inner `srun`, which then only finds /etc/slurm/slurm.conf.
set -euo pipefail

ROOT=${VADBENCH_SLURM_ROOT:-/tmp/vadbench-slurm}
CPUS=${VADBENCH_SLURM_CPUS:-$(nproc)}
GPUS=${VADBENCH_SLURM_GPUS:-1}
GPU_TYPE=${VADBENCH_SLURM_GPU_TYPE:-fake}
PARTITIONS=${VADBENCH_SLURM_PARTITIONS:-main gpu}
CONF_DIR=/etc/slurm
PACKAGES="munge slurm-client slurmctld slurmd"

log() { echo "[local-cluster $(date +%T)] $*"; }
dump_logs() {
    local f
    for f in "$ROOT"/log/*.log "$ROOT"/munge/munged.log; do
        [ -f "$f" ] && { echo "----- last lines of $f"; tail -n 30 "$f"; }
    done
    return 0
}
die() { log "ERROR: $*"; dump_logs; exit 1; }
# wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds or time runs out
wait_for() {
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { sinfo -h -n localhost -o %T 2>/dev/null; }

install_packages() {
    local missing="" p
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || die "packages missing:$missing (installing them needs root)"
    log "installing:$missing"
    # Without systemd the packages' init scripts would start munged/slurmd with the default
    # config; a policy-rc.d that refuses keeps apt from starting anything.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    log "packages installed"
}

write_config() {
    mkdir -p "$CONF_DIR" "$ROOT"/state/ctld "$ROOT"/state/d "$ROOT"/log "$ROOT"/run
    local hw_mem mem node_gres="" gres_types="" tmp partition default=YES i
    hw_mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((hw_mem * 9 / 10))
    if [ "$GPUS" -gt 0 ]; then gres_types="GresTypes=gpu"; node_gres="Gres=gpu:$GPU_TYPE:$GPUS"; fi
    tmp=$(mktemp)
    cat > "$tmp" <<EOF
# Written by profiles/slurm/local-cluster.sh: one node on localhost, no cgroups, no accounting.
ClusterName=vadbench
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$ROOT/state/ctld
SlurmdSpoolDir=$ROOT/state/d
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# start a batch job when it is submitted, not up to 3 s later
SchedulerParameters=batch_sched_delay=0
# take CPUs/RealMemory below as given instead of draining the node over them
SlurmdParameters=config_overrides
ReturnToService=2
DefMemPerCPU=500
# finished jobs stay visible to squeue for 30 min: the profile's squeue status checks need that,
# and the tests read each job's record after runs of up to 15 min
MinJobAge=1800
KillWait=5
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$gres_types
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem $node_gres State=UNKNOWN
EOF
    for partition in $PARTITIONS; do
        echo "PartitionName=$partition Nodes=localhost Default=$default MaxTime=INFINITE State=UP" >> "$tmp"
        default=NO
    done
    install -m 0644 "$tmp" "$CONF_DIR/slurm.conf"
    if [ "$GPUS" -gt 0 ]; then
        # Fake GPUs: a device file is required (without File= slurmd counts 0 GPUs and the node
        # goes INVAL); jobs get CUDA_VISIBLE_DEVICES but no device, so code falls back to CPU.
        : > "$tmp"
        for i in $(seq 1 "$GPUS"); do echo "NodeName=localhost Name=gpu Type=$GPU_TYPE File=/dev/null" >> "$tmp"; done
        install -m 0644 "$tmp" "$CONF_DIR/gres.conf"
    else
        rm -f "$CONF_DIR/gres.conf"
    fi
    rm -f "$tmp"
}

start_munge() {
    local d=$ROOT/munge
    if pid_alive "$d/munged.pid" && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    mkdir -p "$d" /run/munge
    chown munge:munge "$d" /run/munge
    chmod 0700 "$d"
    # munged refuses a socket directory that others cannot traverse
    chmod 0755 /run/munge
    if [ ! -s "$d/munge.key" ]; then
        mungekey --create --keyfile="$d/munge.key"
        chown munge:munge "$d/munge.key"
        chmod 0400 "$d/munge.key"
    fi
    # the default socket (/run/munge/munge.socket.2): Slurm 22.05 ignores a custom one in places
    runuser -u munge -- /usr/sbin/munged --force --key-file="$d/munge.key" \
        --pid-file="$d/munged.pid" --log-file="$d/munged.log" --seed-file="$d/munged.seed"
    wait_for 10 sh -c 'munge -n | unmunge' || die "munged did not come up"
    log "munged running (pid $(cat "$d/munged.pid"))"
}

start_slurm() {
    if pid_alive "$ROOT/run/slurmctld.pid"; then
        scontrol reconfigure >/dev/null 2>&1 || true
    else
        # a fresh controller recovers no jobs or nodes from an older run
        rm -rf "${ROOT:?}"/state/ctld/* "${ROOT:?}"/state/d/*
        slurmctld -c
        wait_for 10 test -s "$ROOT/run/slurmctld.pid" || die "slurmctld wrote no pid file"
    fi
    local end=$((SECONDS + 30))
    until scontrol ping >/dev/null 2>&1; do
        pid_alive "$ROOT/run/slurmctld.pid" || die "slurmctld exited"
        [ $SECONDS -ge $end ] && die "slurmctld does not answer"
        sleep 0.2
    done
    if ! pid_alive "$ROOT/run/slurmd.pid"; then
        # -N: the node is "localhost" whatever this machine's hostname is
        slurmd -N localhost
        wait_for 10 test -s "$ROOT/run/slurmd.pid" || die "slurmd wrote no pid file"
    fi
    wait_for 10 sh -c '[ -n "$(sinfo -h -n localhost -o %T)" ]' || true
    # a node drained by an earlier bad config does not come back by itself
    if node_state | grep -Eqi 'drain|down|inval|fail'; then
        log "node is $(node_state) ($(sinfo -h -n localhost -o %E)); resuming it"
        scontrol update nodename=localhost state=resume || true
    fi
    wait_for 60 sh -c 'sinfo -h -n localhost -o %T | grep -Eq "^(idle|mixed|allocated)"' \
        || { sinfo -R; die "node localhost never became usable"; }
    log "slurmctld (pid $(cat "$ROOT/run/slurmctld.pid")) and slurmd (pid $(cat "$ROOT/run/slurmd.pid")) running"
}

smoke_test() {
    timeout 60 srun -N1 -n1 -t 1 --mem=100 true || die "srun smoke test failed"
    if [ "$GPUS" -gt 0 ]; then
        local seen
        seen=$(timeout 60 srun -N1 -n1 -t 1 --mem=100 --gres=gpu:1 printenv CUDA_VISIBLE_DEVICES) \
            || die "GPU smoke test failed"
        [ -n "$seen" ] || die "a --gres=gpu:1 step saw no CUDA_VISIBLE_DEVICES"
    fi
}

stop_daemon() {   # stop_daemon NAME PIDFILE: TERM, then KILL after 15 s
    local pid
    pid_alive "$2" || return 0
    pid=$(cat "$2")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $1 (pid $pid)"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    log "killed $1 (pid $pid)"
}

cmd_start() {
    local t0=$SECONDS
    if pid_alive "$ROOT/run/slurmctld.pid" && pid_alive "$ROOT/run/slurmd.pid" \
        && pid_alive "$ROOT/munge/munged.pid" && node_state | grep -Eq '^(idle|mixed|allocated)'; then
        log "already running"
        return 0
    fi
    install_packages
    write_config
    start_munge
    start_slurm
    smoke_test
    log "ready in $((SECONDS - t0)) s: partitions $PARTITIONS, $CPUS CPUs, $GPUS GPU(s), logs in $ROOT/log"
}

cmd_stop() {
    if pid_alive "$ROOT/run/slurmctld.pid"; then
        scancel --state=PENDING,RUNNING --full >/dev/null 2>&1 || true
        wait_for 15 sh -c '[ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING)" ]' || true
    fi
    stop_daemon slurmd "$ROOT/run/slurmd.pid"
    stop_daemon slurmctld "$ROOT/run/slurmctld.pid"
    stop_daemon munged "$ROOT/munge/munged.pid"
}

cmd_status() {
    local ok=0 name file
    for name in munged slurmctld slurmd; do
        file=$ROOT/run/$name.pid
        [ $name = munged ] && file=$ROOT/munge/munged.pid
        if pid_alive "$file"; then echo "$name: running (pid $(cat "$file"))"; else echo "$name: stopped"; ok=1; fi
    done
    [ $ok = 0 ] && sinfo && node_state | grep -Eq '^(idle|mixed|allocated)'
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
