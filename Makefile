# pixsent: the researcher's entry points. Every variable can be overridden on the command line,
# e.g. `make fold3 VARIANT=fc7-2 SUBSET=four GPU=0`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIXSENT := $(VENV)/bin/pixsent
SHARED ?= $(abspath ../shared)
export PIXSENT_SHARED := $(SHARED)

.PHONY: help setup test test-fast lint proto prototxt bench clean

help:
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed ## create .venv with every dependency and pixsent installed (editable)

test: setup ## run the whole test suite (what CI runs)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

test-fast: setup ## skip tests marked slow
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

lint: setup ## ruff
	$(VENV)/bin/ruff check pixsent tests tools scripts
	$(VENV)/bin/ruff format --check pixsent tests scripts

proto: setup ## regenerate pixsent/caffe/proto/caffe_pb2.py from caffe.proto
	$(PY) scripts/gen_proto.py

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info

-include mk/*.mk
