#!/usr/bin/env bash
# Starts the local Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) when they do not answer.
# Machines of this kind start both before a session; a fresh machine gets them from here.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port, name, seconds
  for _ in $(seq 1 "$3"); do answers "$1" && return 0; sleep 1; done
  echo "services: $2 did not come up on 127.0.0.1:$1" >&2
  return 1
}

if ! answers 6379; then
  echo "services: starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 redis 30
fi
if ! answers 5672; then
  echo "services: starting rabbitmq-server on 127.0.0.1:5672"
  rabbitmq-server -detached
  wait_for 5672 rabbitmq 120
fi
