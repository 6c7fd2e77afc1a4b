#!/usr/bin/env bash
# Bring up a two-node SLURM on one machine for tests/e2e/test_slurm_two_nodes.py (and test_slurm.py). Run as root.
#
# Why namespaces: one slurmd per network stack. Each node is a network namespace made here (`ip netns add`)
# holding one end of a veth pair, its address assigned inside the namespace; the other ends join a bridge on
# the host, where slurmctld listens on the bridge's address. Each slurmd also runs in a UTS namespace of
# its own, so a job's `hostname` (and torch's rendezvous, which resolves it) names its node. The
# namespaces share the file system: one munged socket and key, one project folder, one /etc/hosts that
# resolves the node names. Partitions `gpu` (default) and `cpu` both span the two nodes; each node has
# GPUS fake gres GPUs (character devices like /dev/null; jobs run on the CPU).
# Re-running tears the cluster down first (tests/slurm/stop_two_nodes.sh) and starts a fresh one; it
# replaces a single-node cluster of tests/slurm/start_slurm.sh (same /etc/slurm). No slurmdbd: pass
# `--slurm-status-command squeue` to the executor plugin; final states go to /var/log/slurm/jobcomp.log.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
GPUS=${GPUS:-2}                      # fake GPUs per node
NET=${MIXSTEER_SLURM_NET:-10.77.0}   # a /24 used only on the bridge made here
BRIDGE=mxs-br0
NODES=(mxs-node1 mxs-node2)
HOST=$(hostname -s)
CONF=/etc/slurm

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge iproute2 >/dev/null
fi
"$HERE/stop_two_nodes.sh"
for d in slurmd slurmctld; do  # daemons the packages or start_slurm.sh started with their own configuration
  [ -f "/run/$d.pid" ] && kill "$(cat "/run/$d.pid")" 2>/dev/null && sleep 1 || true
done

mkdir -p "$CONF" /var/spool/slurmctld /var/log/slurm /run/munge
chown -R slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# --- network: a bridge on the host (slurmctld's side), one namespace + veth pair per node ---
ip link add "$BRIDGE" type bridge
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
HOSTS="# mixsteer two-node SLURM (tests/slurm/start_two_nodes.sh)"
for i in "${!NODES[@]}"; do
  node=${NODES[$i]} addr="$NET.$((11 + i))"
  ip netns add "$node"
  ip link add "mxs-v$i" type veth peer name "mxs-p$i"
  ip link set "mxs-p$i" netns "$node"
  ip link set "mxs-v$i" master "$BRIDGE" up
  ip netns exec "$node" ip link set lo up
  ip netns exec "$node" ip link set "mxs-p$i" name eth0
  ip netns exec "$node" ip addr add "$addr/24" dev eth0
  ip netns exec "$node" ip link set eth0 up
  HOSTS+=$'\n'"$addr $node"
done
HOSTS+=$'\n'"# end mixsteer two-node SLURM"
printf '%s\n' "$HOSTS" >> /etc/hosts

# --- configuration: each node the machine's CPUs and a share of its memory ---
NODE_HW=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ UpTime=.*//')
MEM=$(echo "$NODE_HW" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
NODE_HW=$(echo "$NODE_HW" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((MEM * 4 / 10))/")
cat > "$CONF/slurm.conf" <<CONF
ClusterName=mixsteer
SlurmctldHost=$HOST($NET.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
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
CONF
: > "$CONF/gres.conf"
for i in "${!NODES[@]}"; do
  node=${NODES[$i]}
  echo "NodeName=$node NodeAddr=$NET.$((11 + i)) NodeHostname=$node $NODE_HW Gres=gpu:$GPUS State=UNKNOWN" \
    >> "$CONF/slurm.conf"
  mkdir -p "/dev/fakegpu/$node" "/var/spool/slurmd-$node"
  for g in $(seq 0 $((GPUS - 1))); do
    [ -c "/dev/fakegpu/$node/nvidia$g" ] || mknod "/dev/fakegpu/$node/nvidia$g" c 1 3
    echo "NodeName=$node Name=gpu File=/dev/fakegpu/$node/nvidia$g" >> "$CONF/gres.conf"
  done
done
ALL=$(IFS=,; echo "${NODES[*]}")
cat >> "$CONF/slurm.conf" <<CONF
PartitionName=gpu Nodes=$ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$ALL MaxTime=INFINITE State=UP
CONF

# --- daemons: slurmctld on the host (fresh state: -c), one slurmd per node in its namespaces ---
slurmctld -c
for node in "${NODES[@]}"; do  # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts slurmd wants
  nsenter --net="/run/netns/$node" unshare --uts sh -c "hostname $node && exec slurmd -N $node"
done
for _ in $(seq 60); do
  [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -cv -e down -e unk -e drain)" -ge "${#NODES[@]}" ] && break
  sleep 1
done
scontrol update NodeName="$ALL" State=RESUME 2>/dev/null || true
sinfo -N
