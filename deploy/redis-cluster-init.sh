#!/bin/sh
# One-shot creation of the `scaled` profile's Redis Cluster: 3 masters, 3 replicas.
# Waits for every node to answer, creates the cluster unless it already exists (a second
# `up` with the volumes kept), then waits until every node reports cluster_state:ok.
# Not exercised under Docker here; the same script was run against six local redis-server
# processes (REDIS_CLUSTER_NODES=127.0.0.1:7001 ...), see the commit message.
set -eu

NODES=${REDIS_CLUSTER_NODES:-"10.203.0.11:6379 10.203.0.12:6379 10.203.0.13:6379 10.203.0.14:6379 10.203.0.15:6379 10.203.0.16:6379"}
ATTEMPTS=${REDIS_CLUSTER_INIT_ATTEMPTS:-60}

cli() {  # cli HOST:PORT ARGS...
    target=$1
    shift
    redis-cli -h "${target%:*}" -p "${target##*:}" "$@"
}

wait_for() {  # wait_for DESCRIPTION COMMAND...
    what=$1
    shift
    n=0
    until "$@" >/dev/null 2>&1; do
        n=$((n + 1))
        if [ "$n" -ge "$ATTEMPTS" ]; then
            echo "redis-cluster-init: gave up waiting for $what" >&2
            exit 1
        fi
        sleep 1
    done
}

cluster_ok() {
    cli "$1" cluster info | grep -q '^cluster_state:ok'
}

for node in $NODES; do
    wait_for "$node to answer" cli "$node" ping
done

first=${NODES%% *}
if cluster_ok "$first"; then
    echo "redis-cluster-init: the cluster already exists"
    exit 0
fi

known=$(cli "$first" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "$known" != "1" ]; then
    # Half-formed (a node lost its nodes.conf, or a create was interrupted): creating over
    # it would fail or mix two clusters. An operator decides (CLUSTER RESET, or fix).
    echo "redis-cluster-init: $first knows $known nodes but the cluster is not ok; not touching it" >&2
    exit 1
fi

# shellcheck disable=SC2086  # NODES is a list
redis-cli --cluster create $NODES --cluster-replicas 1 --cluster-yes

for node in $NODES; do
    wait_for "$node to report cluster_state:ok" cluster_ok "$node"
done
echo "redis-cluster-init: cluster created"
