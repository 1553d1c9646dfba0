#!/usr/bin/env bash
# Starts ONE local Docker engine if none answers; idempotent. Prints nothing on success but the socket.
# Used by tests/deploy and by hand before molecule / the local deployment:
#   bash scripts/docker-engine.sh          start (or find) the engine, wait until `docker info` answers
#   bash scripts/docker-engine.sh --check  exit 0 if an engine answers, 1 otherwise (starts nothing)
# The engine keeps its state in /var/lib/docker (images survive between runs: the image cache of the tests).
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/dockerd-frame-buffer.log}
pidfile=/var/run/docker.pid
deadline=${DOCKERD_WAIT:-60}

answers() { timeout 10 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

if answers; then
  exit 0
fi
[[ "${1:-}" == "--check" ]] && exit 1

command -v dockerd >/dev/null || { echo "docker-engine: dockerd not installed (scripts/setup.sh --deploy)" >&2; exit 2; }

# A dockerd that is still starting (another caller, or a slow start): wait for it instead of starting a second.
running=""
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  running=$(cat "$pidfile")
fi
if [[ -z "$running" ]]; then
  rm -f "$pidfile"
  # Bridge networking stays available (the production shape uses a user-defined network); the local
  # deployment and the tests use host networking bound to 127.0.0.1.
  setsid nohup dockerd --host unix:///var/run/docker.sock --pidfile "$pidfile" >>"$log" 2>&1 < /dev/null &
fi

for ((i = 0; i < deadline * 5; i++)); do
  answers && exit 0
  sleep 0.2
done
echo "docker-engine: dockerd did not answer within ${deadline}s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
