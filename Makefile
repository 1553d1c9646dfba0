# The two commands of the README:
#   make demo   producer and consumers on local defaults, with a loss/duplicate audit
#   make test   every test: lint, types, unit, conformance, fault, deployment
.PHONY: demo test setup services lint bench deploy-test deploy-local

setup:
	bash scripts/setup.sh --deploy

services: setup
	bash scripts/services.sh

demo:
	bash scripts/setup.sh
	.venv/bin/frame-buffer demo

test:
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check service tests
	.venv/bin/mypy

bench: services
	.venv/bin/frame-buffer bench --backends redis,rabbitmq

# The Ansible deployment against the local Docker engine (inventory/local), then its verification.
deploy-local: setup
	bash scripts/docker-engine.sh
	bash scripts/base-image.sh
	.venv/bin/ansible-playbook -i inventory/local playbooks/site.yml playbooks/verify.yml

deploy-test: setup
	.venv/bin/pytest tests/deploy
