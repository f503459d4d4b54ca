# condorlab: `make demo` builds a test bed and deploys a site into it,
# `make test` lints, runs the unit tests and the molecule scenario.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/testbed/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# No __pycache__ in the tree: roles copy hub/ to the hosts as it is.
export PYTHONDONTWRITEBYTECODE := 1
# Shared by the test-bed hosts so that repeated runs do not download again.
export CONDORLAB_PIP_CACHE ?= $(HOME)/.cache/condorlab-pip
# Debian packages the test bed needs on the machine that runs it.
HOST_PACKAGES := podman runc debootstrap python3 python3-venv chromium chromium-driver
STAMP := $(VENV)/.installed

.PHONY: help deps host-packages root image demo status bench test lint unit molecule clean

help:
	@echo "make demo    build the test bed, deploy site.yml into it and show what runs"
	@echo "make test    lint, unit tests, then the molecule scenario (needs root)"
	@echo "make bench   time session start and stop on the demo (median of 5)"
	@echo "make clean   remove the demo containers and any molecule leftovers"

root:
	@[ "$$(id -u)" -eq 0 ] || { echo "condorlab: this target needs root (rootful podman, debootstrap); run it with sudo" >&2; exit 1; }

# System packages (Debian) and the pinned Python tools in $(VENV).
deps: root host-packages $(STAMP)

host-packages: root
	@missing=""; for p in $(HOST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "condorlab: installing$$missing"; \
	  command -v apt-get >/dev/null || { echo "condorlab: no apt-get; install$$missing by hand" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): requirements-dev.txt | host-packages
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	@touch $@

image: deps
	@testbed/build-image.sh

demo: deps
	@testbed/demo.sh up

status: root
	@testbed/demo.sh status

# Session start/stop times on the demo test bed (make demo first).
bench: root
	@testbed/bench-session-start.sh 5 alice

lint: $(STAMP)
	yamllint --strict .
	ansible-lint --offline
	ruff check plugins tests molecule hub roles/jupyterhub/files/condorlab-job
	ruff format --check plugins tests molecule hub roles/jupyterhub/files/condorlab-job

# Two runs: the plugins' tests load Ansible's module machinery, the hub
# package's tests load JupyterHub; they do not share an interpreter.
unit: $(STAMP)
	python -m pytest -q -p no:cacheprovider tests/unit
	python -m pytest -q -p no:cacheprovider hub/tests

molecule: deps
	mkdir -p $(CONDORLAB_PIP_CACHE)
	image=$$(testbed/build-image.sh) && CONDORLAB_IMAGE=$$image molecule test --scenario-name default

test: lint unit molecule

clean: root
	@testbed/demo.sh down
	@-CONDORLAB_IMAGE=$$(testbed/build-image.sh --name) $(VENV)/bin/molecule destroy --scenario-name default >/dev/null 2>&1 || true
