#!/usr/bin/env bash
# Bring up a single-node SLURM (Debian's slurm-wlm packages) for tests/e2e/test_slurm.py. Run as root.
# Partitions: `gpu` (GPUS fake gres GPUs backed by placeholder device files; jobs run on the CPU) and `cpu`.
# No slurmdbd: final states go to /var/log/slurm/jobcomp.log (jobcomp/filetxt); pass
# `--slurm-status-command squeue` to the executor plugin (MinJobAge keeps finished jobs visible to squeue and `scontrol show job` for an hour: the test reads them after a whole demo).
set -euo pipefail
GPUS=${GPUS:-4}
if ! command -v slurmctld >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
CONF=/etc/slurm
mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /dev/fakegpu
chown -R slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
# slurmd wants character devices: copies of /dev/null (major 1, minor 3) stand in for the GPUs.
for i in $(seq 0 $((GPUS - 1))); do [ -c "/dev/fakegpu/nvidia$i" ] || mknod "/dev/fakegpu/nvidia$i" c 1 3; done

[ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

HOST=$(hostname -s)
NODE=$(slurmd -C | head -1 | sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/")
MEM=$(echo "$NODE" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
NODE=$(echo "$NODE" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((MEM * 9 / 10))/")
cat > "$CONF/slurm.conf" <<CONF
ClusterName=mixsteer
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MinJobAge=3600
DefMemPerCPU=1000
$NODE Gres=gpu:$GPUS State=UNKNOWN
PartitionName=gpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF
: > "$CONF/gres.conf"
for i in $(seq 0 $((GPUS - 1))); do echo "NodeName=$HOST Name=gpu File=/dev/fakegpu/nvidia$i" >> "$CONF/gres.conf"; done

# (re)start with this configuration: the packages may have started the daemons with their own
for d in slurmd slurmctld; do [ -f "/run/$d.pid" ] && kill "$(cat "/run/$d.pid")" 2>/dev/null && sleep 1 || true; done
slurmctld
slurmd
for _ in $(seq 30); do sinfo -h -o '%T' 2>/dev/null | grep -qv -e down -e unk && break; sleep 1; done
scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
sinfo
