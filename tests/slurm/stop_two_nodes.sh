#!/usr/bin/env bash
# Tear down what tests/slurm/start_two_nodes.sh made: slurmctld, every process in the node namespaces
# (slurmd, slurmstepd, jobs), the namespaces, the bridge and the /etc/hosts block. Safe to run when
# nothing is up. munged stays (start_slurm.sh shares it). Run as root.
set -uo pipefail
BRIDGE=mxs-br0
NODES=(mxs-node1 mxs-node2)

stop_pids() {  # SIGTERM, then SIGKILL whatever is still alive 5 s later
  [ $# -gt 0 ] || return 0
  kill "$@" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$@" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$@" 2>/dev/null; sleep 0.5
}
[ -f /run/slurmctld.pid ] && stop_pids "$(cat /run/slurmctld.pid)"
for node in "${NODES[@]}"; do
  ip netns list 2>/dev/null | grep -qw "$node" || continue
  # shellcheck disable=SC2046  # one pid per word
  stop_pids $(ip netns pids "$node")
  ip netns del "$node"
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
if grep -q '^# mixsteer two-node SLURM' /etc/hosts; then  # rewritten in place: /etc/hosts may be a mount
  kept=$(sed '/^# mixsteer two-node SLURM/,/^# end mixsteer two-node SLURM/d' /etc/hosts)
  printf '%s\n' "$kept" > /etc/hosts
fi
exit 0
