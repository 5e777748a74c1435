# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test sweep bench clean

$(STAMP): setup.cfg pyproject.toml scripts/install.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	bash scripts/install.sh $(PY)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m jaxbrain.main --config=configs/brainmae.py --workdir=runs/brainmae_demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=20 tests

sweep: $(STAMP)
	$(PY) -m theory.sweep --config=configs/dsd.py --workdir=runs/dsd

clean:
	rm -rf $(VENV) runs
