# The two commands of the README:  `make book`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdelab-installed
# OpenMP's idle threads spin at most 1000 iterations, then sleep: a busy machine slows torch
# ~2x, not 3-40x, and an idle one keeps its speed (README, "A busy machine"). The same bound
# as `import sdelab`; give GOMP_SPINCOUNT=300000 (libgomp's default) on the command line to compare.
GOMP_SPINCOUNT ?= 1000
export GOMP_SPINCOUNT

.PHONY: setup book test test-unit test-wheel notebooks times clean

## setup: .venv with sdelab (editable), JupyterLab, the book and test tools, and Fashion-MNIST
setup: $(STAMP)
$(STAMP): pyproject.toml tools/setup.sh
	bash tools/setup.sh $(VENV)
	touch $(STAMP)

## book: build the website from the executed chapters into _build/html (warnings are errors)
book: $(STAMP)
	$(VENV)/bin/jupyter-book build --warningiserror --keep-going .
	@echo "Open _build/html/index.html"

## test: the unit, property and exercise tests and the strict book build (test-unit), then every
## chapter through nbval from the installed wheel, outside the repository (test-wheel)
test: test-unit test-wheel

test-unit: $(STAMP)
	$(VENV)/bin/pytest tests exercises

## test-wheel: build the wheel, install it into a fresh venv in /tmp, run every chapter there
test-wheel: $(STAMP)
	bash tools/test_wheel.sh

## notebooks: re-execute every chapter in place, storing the outputs that nbval checks
notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py book/*.ipynb

## times: time every chapter, idle and with one core busy, into book/runtimes.md
times: $(STAMP)
	$(PY) tools/time_chapters.py

clean:
	rm -rf _build .pytest_cache .hypothesis build
