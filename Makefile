# The two commands of the README:  `make book`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdelab-installed

.PHONY: setup book test notebooks clean

## setup: virtual environment with sdelab, the book and test tools, and the Fashion-MNIST data
setup: $(STAMP)
$(STAMP): pyproject.toml tools/setup.sh
	bash tools/setup.sh $(VENV)
	touch $(STAMP)

## book: build the website from the executed chapters into _build/html (warnings are errors)
book: $(STAMP)
	$(VENV)/bin/jupyter-book build --warningiserror --keep-going .
	@echo "Open _build/html/index.html"

## test: unit, property, exercise and notebook (nbval) tests, and a strict book build
test: $(STAMP)
	$(VENV)/bin/pytest

## notebooks: re-execute every chapter in place, storing the outputs that nbval checks
notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py book/*.ipynb

clean:
	rm -rf _build .pytest_cache .hypothesis
