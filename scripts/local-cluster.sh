#!/usr/bin/env bash
# A Redis Cluster of local redis-server processes, for `frame-buffer bench --redis-mode cluster` / `--cluster-url`
# and for trying cluster mode by hand (docs/scaling.md). Needs only redis-server and redis-cli (scripts/setup.sh).
#
#   scripts/local-cluster.sh start [--masters N] [--replicas R] [--port P] [--dir DIR] [--node-timeout MS]
#       N masters (default 3) with R replicas each (default 1) on ports P, P+1, ... (default 7000), loopback only.
#       Prints the seed URLs (FRAME_BUFFER_REDIS_URL in cluster mode) on stdout once every node says
#       cluster_state:ok and every replica is in sync. Redis Cluster's own `redis-cli --cluster create` needs 3
#       masters; 1 or 2 are assigned their slots here instead (no automatic failover then: a failover needs a
#       majority of masters to vote).
#   scripts/local-cluster.sh seeds [--port P] [--dir DIR]     the seed URLs of a running cluster
#   scripts/local-cluster.sh stop [--port P] [--dir DIR]      SHUTDOWN NOSAVE every node, delete DIR
#
# Each node runs from DIR/<port>/redis.conf (daemonized, AOF appendfsync everysec, nodes.conf, log and pid file
# there too): `redis-server DIR/<port>/redis.conf` restarts a killed node in place, and it rejoins the cluster
# (a former master as a replica). `frame-buffer bench --failover-drills N` restarts the masters it SIGKILLs
# that way, which is why it asks for nodes started by this script. cluster-node-timeout is 1000 ms as in the
# tests (tests/cluster_servers.py): failovers take seconds; Redis's default (15000) makes them take ~20 s.
set -euo pipefail

usage() { sed -n '4,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "local-cluster.sh: $*" >&2; exit 1; }

action=${1:-}; [[ -n $action ]] || usage; shift
masters=3 replicas=1 port=7000 dir="" node_timeout=1000
while [[ $# -gt 0 ]]; do
    case $1 in
        --masters) masters=$2; shift 2 ;;
        --replicas) replicas=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --node-timeout) node_timeout=$2; shift 2 ;;
        *) usage ;;
    esac
done
for value in "$masters" "$replicas" "$port" "$node_timeout"; do
    [[ $value =~ ^[0-9]+$ ]] || die "not a number: '$value'"
done
(( masters >= 1 && masters <= 16 )) || die "--masters: 1 to 16, got $masters"
(( replicas <= 4 )) || die "--replicas: 0 to 4, got $replicas"
(( port >= 1024 && port + 64 <= 55535 )) || die "--port: 1024 to 55471 (the bus port is port + 10000), got $port"
dir=${dir:-${TMPDIR:-/tmp}/frame-buffer-cluster-$port}
marker="$dir/.frame-buffer-local-cluster"

ports_of_dir() { # the nodes of a running cluster: the port directories this script made
    [[ -f $marker ]] || die "no cluster of this script in $dir (start it first, or pass --dir/--port)"
    find "$dir" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -n
}

seeds() { local out="" p; for p in "$@"; do out+="${out:+,}redis://127.0.0.1:$p/0"; done; echo "$out"; }

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.1 s until it succeeds
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || die "timed out waiting for $what"
        sleep 0.1
    done
}

healthy() { # every node: cluster_state ok, every node known; every replica's link up and not syncing
    local p info
    for p in "$@"; do
        info=$(cli "$p" cluster info) || return 1
        grep -q '^cluster_state:ok' <<<"$info" || return 1
        grep -q "^cluster_known_nodes:$#" <<<"$info" || return 1
        info=$(cli "$p" info replication) || return 1
        if grep -q '^role:slave' <<<"$info"; then
            grep -q '^master_link_status:up' <<<"$info" || return 1
            grep -q '^master_sync_in_progress:0' <<<"$info" || return 1
        fi
    done
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

knows() { cli "$1" cluster nodes | grep -q "^$2 "; }

start() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || die "redis-server and redis-cli needed (scripts/setup.sh)"
    [[ ! -e $marker ]] || die "$dir already holds a cluster: '$0 stop --dir $dir' first"
    local count=$((masters * (1 + replicas))) p ports=()
    for ((p = port; p < port + count; p++)); do
        ! listening "$p" || die "port $p is taken"
        ! listening $((p + 10000)) || die "port $((p + 10000)) (the cluster bus of port $p) is taken"
        ports+=("$p")
    done
    mkdir -p "$dir" && dir=$(cd "$dir" && pwd) && marker="$dir/.frame-buffer-local-cluster" && touch "$marker"
    for p in "${ports[@]}"; do
        mkdir -p "$dir/$p"
        cat >"$dir/$p/redis.conf" <<EOF
port $p
bind 127.0.0.1
dir $dir/$p
daemonize yes
pidfile $dir/$p/redis.pid
logfile $dir/$p/redis.log
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $node_timeout
appendonly yes
appendfsync everysec
save ""
maxmemory-policy noeviction
repl-diskless-sync-delay 0
EOF
        redis-server "$dir/$p/redis.conf"
    done
    for p in "${ports[@]}"; do wait_for 30 "redis-server on port $p" cli "$p" ping; done
    local addresses=() master_ids=()
    for p in "${ports[@]}"; do addresses+=("127.0.0.1:$p"); done
    if (( masters >= 3 )); then
        redis-cli --cluster create "${addresses[@]}" --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log" 2>&1 \
            || die "redis-cli --cluster create failed: see $dir/create.log"
    else  # redis-cli refuses fewer than 3 masters: give each master an equal range of slots, then join the rest
        local m low high id
        for ((m = 0; m < masters; m++)); do
            low=$((16384 * m / masters)) high=$((16384 * (m + 1) / masters - 1))
            cli "${ports[m]}" cluster addslotsrange "$low" "$high" >/dev/null
            cli "${ports[m]}" cluster set-config-epoch $((m + 1)) >/dev/null
            master_ids+=("$(cli "${ports[m]}" cluster myid)")
        done
        for p in "${ports[@]:1}"; do cli "$p" cluster meet 127.0.0.1 "${ports[0]}" >/dev/null; done
        for ((m = masters; m < count; m++)); do
            id=${master_ids[$(((m - masters) % masters))]}
            wait_for 30 "port ${ports[m]} to learn of its master" knows "${ports[m]}" "$id"
            cli "${ports[m]}" cluster replicate "$id" >/dev/null
        done
    fi
    wait_for 60 "the cluster on ports ${ports[*]} to be whole (state ok, replicas in sync)" healthy "${ports[@]}"
    echo "local-cluster.sh: $masters master(s) x $replicas replica(s) on ports ${ports[0]}-${ports[-1]}, in $dir" >&2
    seeds "${ports[@]}"
}

stop() {
    local p pid
    local ports; ports=$(ports_of_dir)
    for p in $ports; do
        pid=$(cat "$dir/$p/redis.pid" 2>/dev/null || true)
        cli "$p" shutdown nosave >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 10))
        while [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then  # only the process this script started, by its id
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    rm -rf -- "$dir"
}

case $action in
    start) start ;;
    seeds) ports=$(ports_of_dir); seeds $ports ;;
    stop) stop ;;
    *) usage ;;
esac
