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
# Everything was installed above: a deployment test that would skip for lack of tooling fails instead.
export FB_TEST_REQUIRE_DEPLOY=1
rm -f .coverage .coverage.*
pytest_group() {  # pytest_group NAME ARGS...: one pytest run with its own coverage data file
    local name=$1
    shift
    COVERAGE_FILE=".coverage.$name" .venv/bin/pytest --cov=frame_buffer --cov-branch --cov-report= "$@"
}
if [ $# -gt 0 ]; then
    echo "== pytest $*"
    pytest_group args "$@"
else
    # Two runs at once, so that CI stays well under its limit: the deployment tests (they mostly wait on
    # Docker, Ansible and the containers' health checks, and use their own ports and container names) beside
    # everything else. Nothing in tests/deploy holds the host's CPU wake-up latency bound (the program that
    # does is tested in tests/test_cpu_wake_latency_program.py, with the other tests that read that bound).
    echo "== pytest: tests/deploy (alongside, its log follows the rest) and everything else"
    pytest_group deploy tests/deploy -p no:cacheprovider > .pytest-deploy.log 2>&1 &
    deploy_pid=$!
    trap 'kill "$deploy_pid" 2>/dev/null || true' EXIT
    rest=0
    pytest_group rest --ignore=tests/deploy || rest=$?
    deploy=0
    wait "$deploy_pid" || deploy=$?
    trap - EXIT
    echo "== pytest tests/deploy (ran alongside the rest)"
    cat .pytest-deploy.log
    if [ "$rest" -ne 0 ] || [ "$deploy" -ne 0 ]; then
        echo "pytest failed: everything else exit $rest, tests/deploy exit $deploy"
        exit 1
    fi
fi
.venv/bin/coverage combine --quiet .coverage.*
echo "== coverage of the queue backends (must be 100% of lines and branches)"
.venv/bin/coverage report --include='service/frame_buffer/queue/*' --fail-under=100
