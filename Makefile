# condorlab: `make demo` builds a test bed and deploys a site into it,
# `make test` lints, runs the unit tests and the molecule scenario.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
# The tools are installed once per machine and set of pins: .venv links to
# this directory, named after requirements-dev.txt's hash, which a fresh clone
# reuses (delete it to reinstall).
VENV_CACHE ?= $(HOME)/.cache/condorlab/venv-$(shell sha256sum requirements-dev.txt | cut -c1-12)
PYTHON ?= python3
export PATH := $(VENV_CACHE)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/testbed/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# No __pycache__ in the tree: roles copy hub/ to the hosts as it is.
export PYTHONDONTWRITEBYTECODE := 1
# Shared by the test-bed hosts so that repeated runs do not download again.
export CONDORLAB_PIP_CACHE ?= $(HOME)/.cache/condorlab-pip
# One molecule test bed per machine (its containers have fixed names): make
# molecule, make bed and make verify all use this working directory.
export MOLECULE_EPHEMERAL_DIRECTORY ?= $(HOME)/.cache/condorlab/molecule
# Debian packages the test bed needs on the machine that runs it.
HOST_PACKAGES := podman runc debootstrap python3 python3-venv chromium chromium-driver
STAMP := $(VENV)/.installed

# How the demo hub logs users in: pam or oidc (make demo LOGIN=oidc).
LOGIN ?= pam

.PHONY: help deps venv host-packages root image demo status bench bench-busy bench-transport bench-lab-pool test lint unit molecule bed converge verify bed-down clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 22

root:
	@[ "$$(id -u)" -eq 0 ] || { echo "condorlab: this target needs root (rootful podman, debootstrap); run it with sudo" >&2; exit 1; }

deps: root host-packages $(STAMP) ## install the test bed's Debian packages (root) and the Python tools in .venv

venv: $(STAMP) ## the pinned Python tools in .venv only (no root): enough for lint and unit

host-packages: root
	@missing=""; for p in $(HOST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "condorlab: installing$$missing"; \
	  command -v apt-get >/dev/null || { echo "condorlab: no apt-get; install$$missing by hand" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The Python tools need python3 with venv only; no root, no container engine.
$(STAMP): requirements-dev.txt
	@if [ ! -e $(VENV_CACHE)/.installed ]; then \
	  $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "condorlab: $(PYTHON) cannot make a venv; install python3-venv (sudo apt-get install python3-venv)" >&2; exit 1; }; \
	  echo "condorlab: installing the Python tools in $(VENV_CACHE)"; \
	  rm -rf $(VENV_CACHE) && $(PYTHON) -m venv $(VENV_CACHE) \
	    && $(VENV_CACHE)/bin/pip install --quiet --upgrade pip \
	    && $(VENV_CACHE)/bin/pip install --quiet -r requirements-dev.txt \
	    && touch $(VENV_CACHE)/.installed || exit 1; \
	fi
	@if [ -d $(VENV) ] && [ ! -L $(VENV) ]; then rm -rf $(VENV); fi
	@ln -sfn $(VENV_CACHE) $(VENV)
	@touch -h $(VENV) && touch $@

image: deps ## build the test bed's container image (root)
	@testbed/build-image.sh

demo: deps ## build the test bed, deploy site.yml into it and show what runs (root; LOGIN=oidc: log in through the provider)
	@CONDORLAB_DEMO_LOGIN=$(LOGIN) testbed/demo.sh up

status: root ## show the demo's hosts and services (root)
	@testbed/demo.sh status

# Session start/stop times on the demo test bed (make demo first).
bench: root ## session start and stop (median of 5), then the tunnel transport's figures (root, make demo first)
	@testbed/bench-session-start.sh 5 alice
	@testbed/bench-transport.sh

bench-busy: root ## session starts on a 100%-busy farm, share on and off: median, p95, preemptions (root, make demo first)
	@testbed/bench-busy.sh

bench-transport: root ## the tunnel transport: kernel round trip, download, hub cost per session, busy starts (root, make demo first)
	@testbed/bench-transport.sh

bench-lab-pool: root ## the pool from the lab: condor_q, condor_submit -> running, the first token, idle and busy (root, make demo first)
	@testbed/bench-lab-pool.sh

lint: $(STAMP) ## yamllint, ansible-lint, ruff (no root, no podman)
	yamllint --strict .
	ansible-lint --offline
	ruff check plugins tests molecule hub session testbed roles
	ruff format --check plugins tests molecule hub session testbed roles

# Two runs: the plugins' tests load Ansible's module machinery, the hub
# package's tests load JupyterHub; they do not share an interpreter.
unit: $(STAMP) ## unit tests of the plugins and the hub package (no root, no podman)
	python -m pytest -q -p no:cacheprovider tests/unit
	python -m pytest -q -p no:cacheprovider hub/tests session/tests

# With CONDORLAB_PHASES set, the image, molecule's steps and each test file
# are recorded there; testbed/phases.py table prints them (.ci/run does).
molecule: deps | $(CONDORLAB_PIP_CACHE) ## the molecule scenario: the whole site in containers (root)
	set -o pipefail; image=$$(testbed/phases.py run image -- testbed/build-image.sh) && \
	  CONDORLAB_IMAGE=$$image molecule test --scenario-name default 2>&1 | testbed/phases.py molecule

$(CONDORLAB_PIP_CACHE):
	mkdir -p $@

test: lint unit molecule ## lint, unit tests, then the molecule scenario (root)

# The developer loop: a converged molecule test bed kept between runs. Steps
# on an existing bed only need the image's name.
BED_IMAGE = CONDORLAB_IMAGE=$$(testbed/build-image.sh --name)

bed: deps | $(CONDORLAB_PIP_CACHE) ## create the molecule test bed and converge site.yml into it, and keep it (root)
	CONDORLAB_IMAGE=$$(testbed/build-image.sh) molecule converge --scenario-name default

# TAGS and LIMIT narrow the run: make converge TAGS=role::jupyterhub LIMIT=hub
converge: root ## site.yml into the existing bed again (TAGS=..., LIMIT=...) (root)
	$(BED_IMAGE) molecule converge --scenario-name default -- \
	  $(if $(TAGS),--tags $(TAGS)) $(if $(LIMIT),--limit $(LIMIT))

# TEST picks test files or tests: make verify TEST=test_share.py, TEST='test_faults.py -k idle'
verify: root ## the molecule tests against the existing bed, all or TEST=... (root)
	cd molecule/default/tests && \
	  MOLECULE_PROJECT_DIRECTORY=$(CURDIR) MOLECULE_SCENARIO_DIRECTORY=$(CURDIR)/molecule/default \
	  MOLECULE_INVENTORY_FILE=$(MOLECULE_EPHEMERAL_DIRECTORY)/inventory/ansible_inventory.yml \
	  python -m pytest -p no:cacheprovider -v --durations=15 $(or $(TEST),.)

bed-down: root ## remove the molecule test bed (root)
	$(BED_IMAGE) molecule destroy --scenario-name default

clean: root ## remove the demo containers and any molecule leftovers (root)
	@testbed/demo.sh down
	@-$(BED_IMAGE) $(VENV)/bin/molecule destroy --scenario-name default >/dev/null 2>&1 || true
