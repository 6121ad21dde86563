# Two commands a newcomer needs: `make run` and `make test`.
# Both create .venv on a fresh machine and install what the project needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= $(CURDIR)/.dcrond-data

.PHONY: run test lint typecheck unit sim bench clean

$(STAMP): pyproject.toml .ci/apt-packages
	bash .ci/install-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@echo "dcrond starting; in another shell: . $(VENV)/bin/activate && dcronctl cluster status"
	$(BIN)/dcrond --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check dcrond tests bench
	$(BIN)/ruff format --check dcrond tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	bash .ci/install-system-packages apt-packages-bench
	$(BIN)/python bench/raft.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
