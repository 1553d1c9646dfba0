#!/usr/bin/env bash
# Every test, as CI runs it: installs what is missing, starts what is not running, then lint, types, the
# whole pytest suite with coverage, and the 100% line+branch gate on the queue backends.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --deploy
bash scripts/services.sh

echo "== ruff"
.venv/bin/ruff check service tests
echo "== mypy (strict, service/)"
.venv/bin/mypy
echo "== import contracts (the floors of the package, [tool.importlinter] in pyproject.toml)"
# service/ first on the path: the contracts are checked on this checkout's sources whatever the venv points at.
PYTHONPATH="service${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/lint-imports --no-cache
echo "== pytest"
# Everything was installed above: a deployment test that would skip for lack of tooling fails instead.
export FB_TEST_REQUIRE_DEPLOY=1
rm -f .coverage .coverage.*
.venv/bin/pytest --cov=frame_buffer --cov-branch --cov-report= "$@"
echo "== coverage of the queue backends (must be 100% of lines and branches)"
.venv/bin/coverage report --include='service/frame_buffer/queue/*' --fail-under=100
