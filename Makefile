# All set-up happens here: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run test setup bench screenshots clean

$(STAMP): pyproject.toml packaging/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c packaging/constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/distillscope

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen DISTILLSCOPE_MODEL_CACHE=$(CURDIR)/.test-cache/models \
		$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) tests/bench/bench_extract.py

clean:
	rm -rf $(VENV) build *.egg-info
