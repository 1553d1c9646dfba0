#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: Debian packages (only the missing ones) and the
# Python environment in .venv. Idempotent: a second run installs nothing.
#   scripts/setup.sh            service + test tooling
#   scripts/setup.sh --deploy   also the Docker engine, debootstrap and the Ansible tooling
set -euo pipefail
cd "$(dirname "$0")/.."

deploy=0
[[ "${1:-}" == "--deploy" ]] && deploy=1

packages=(redis-server redis-tools rabbitmq-server prometheus prometheus-redis-exporter ffmpeg
  # RTSP test server: GStreamer's RTSP server driven from Debian's own python3 (GObject bindings).
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)
if (( deploy )); then
  packages+=(docker.io debootstrap)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian's postinst scripts would start services through policy-rc.d-less init; we start them ourselves.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
extras="dev,video,report"
(( deploy )) && extras+=",deploy"
hash=$(sha1sum pyproject.toml | cut -c1-12)
stamp=".venv/.installed-$hash-${extras//,/-}"
installed=""
for existing in .venv/.installed-"$hash"-*; do  # an install with more extras covers this one
  [[ -f "$existing" ]] || continue
  covered=1
  for extra in ${extras//,/ }; do [[ "$existing" == *"-$extra"* ]] || covered=0; done
  (( covered )) && installed=$existing
done
if [[ -z "$installed" ]]; then
  echo "setup: installing the project into .venv ($extras)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[${extras}]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
