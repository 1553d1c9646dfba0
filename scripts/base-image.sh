#!/usr/bin/env bash
# Builds the local images the deployment tests run on, since no container registry is reachable here:
#   base            debootstrap --variant=minbase of this machine's Debian release, from apt's own mirror,
#                   imported with `docker import` as frame-buffer-local/debian:<codename>
#   redis           Debian's redis-server                 -> frame-buffer-local/redis:local
#   redis_exporter  Debian's prometheus-redis-exporter    -> frame-buffer-local/redis_exporter:local
#   prometheus      Debian's prometheus                   -> frame-buffer-local/prometheus:local
#   service         service/Dockerfile on the base        -> frame-buffer-local/frame-buffer:local
# Usage: bash scripts/base-image.sh [base|redis|redis_exporter|prometheus|service ...]   (default: all)
# Cached: an image is rebuilt only when the hash of its inputs (Dockerfile text, base image id, and for
# the service the files of its build context) differs from the label on the existing image.
# Needs a running engine (scripts/docker-engine.sh) and root (debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_BUILDKIT=0   # the Debian engine has no buildx; say so instead of getting the warning

prefix=${FB_IMAGE_PREFIX:-frame-buffer-local}
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
base="$prefix/debian:$codename"
label=org.frame-buffer.content-hash

say() { echo "base-image: $*" >&2; }
# The legacy builder's deprecation notice is noise here: the Debian engine has no BuildKit.
quiet_build() { docker build "$@" 2> >(grep -v -e DEPRECATED -e BuildKit -e 'environment-variable' -e '^$' >&2); }

mirror() {
  # The first Debian archive URI apt uses (deb822 .sources or one-line sources.list), not the security one.
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -n1 || true)
  if [[ -z "$uri" ]]; then
    uri=$(cat /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" {print $2}' | grep -v security | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

image_hash() { docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true; }

build_base() {
  # The recipe and this machine's CA bundle (its egress proxy re-signs TLS, so pip in the image needs it).
  local want
  want=$( (declare -f build_base; cat /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/*.crt 2>/dev/null) | sha256sum | cut -c1-16)
  if [[ "$(image_hash "$base")" == "$want" ]]; then
    say "$base up to date ($want)"
    return
  fi
  command -v debootstrap >/dev/null || { say "debootstrap missing (scripts/setup.sh --deploy)"; exit 2; }
  local root m
  m=$(mirror)
  root=$(mktemp -d /var/tmp/frame-buffer-rootfs.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  say "debootstrap --variant=minbase $codename from $m"
  debootstrap --variant=minbase "$codename" "$root" "$m" >/tmp/frame-buffer-debootstrap.log 2>&1 \
    || { tail -n 30 /tmp/frame-buffer-debootstrap.log >&2; exit 1; }
  # No init system in a container: package scripts must not try to start daemons while images build.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90frame-buffer"
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  # ... and where update-ca-certificates (run when a package pulls in ca-certificates) picks it up again.
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' --change "LABEL $label=$want" - "$base" >/dev/null
  say "imported $base ($want)"
}

# build NAME DOCKERFILE-TEXT: a context-less image on the base.
build() {
  local name=$1 text=$2 want
  want=$( (printf '%s' "$text"; docker image inspect -f '{{.Id}}' "$base") | sha256sum | cut -c1-16)
  if [[ "$(image_hash "$name")" == "$want" ]]; then
    say "$name up to date ($want)"
    return
  fi
  say "building $name ($want)"
  printf '%s\n' "$text" | quiet_build --network host --force-rm -q --label "$label=$want" -t "$name" - >/dev/null
}

build_service() {
  local name="$prefix/frame-buffer:local" want
  [[ -f service/Dockerfile ]] || { say "service/Dockerfile missing"; exit 2; }
  want=$( (find service pyproject.toml README.md .dockerignore -type f \
             ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' 2>/dev/null | LC_ALL=C sort \
             | xargs sha256sum; docker image inspect -f '{{.Id}}' "$base") | sha256sum | cut -c1-16)
  if [[ "$(image_hash "$name")" == "$want" ]]; then
    say "$name up to date ($want)"
    return
  fi
  say "building $name ($want)"
  quiet_build --network host --force-rm -q --build-arg "BASE_IMAGE=$base" --label "$label=$want" \
    -f service/Dockerfile -t "$name" . >/dev/null
  # The replaced image of an earlier build, if any.
  docker image prune -f --filter "label=$label" >/dev/null
}

# uid/gid 999 as in the official redis image, so the role's config file ownership fits both.
redis_df="FROM $base
RUN groupadd --system --gid 999 redis && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis redis \\
 && apt-get update && apt-get install -y --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data /usr/local/etc/redis && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD [\"redis-server\"]"

exporter_df="FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends prometheus-redis-exporter wget \\
 && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/prometheus-redis-exporter /redis_exporter
USER nobody
EXPOSE 9121
ENTRYPOINT [\"/redis_exporter\"]"

prometheus_df="FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends prometheus wget \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT [\"/usr/bin/prometheus\"]
CMD [\"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/prometheus\"]"

targets=("$@")
(( ${#targets[@]} )) || targets=(base redis redis_exporter prometheus service)
build_base
for t in "${targets[@]}"; do
  case $t in
    base) ;;
    redis) build "$prefix/redis:local" "$redis_df" ;;
    redis_exporter) build "$prefix/redis_exporter:local" "$exporter_df" ;;
    prometheus) build "$prefix/prometheus:local" "$prometheus_df" ;;
    service) build_service ;;
    *) say "unknown image $t"; exit 2 ;;
  esac
done
