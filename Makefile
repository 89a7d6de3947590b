# hierlmm: `make demo` and `make test` do all set-up (a .venv with Python >= 3.12) on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench app clean

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  base="$$(bash .ci/find-python)" || exit 1; \
	  echo "creating $(VENV) with $$base"; \
	  "$$base" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hierlmm demo --out out

lint: $(STAMP)
	$(VENV)/bin/ruff check hierlmm tests bench docs/*.py
	$(VENV)/bin/lint-imports --no-cache --no-logo

test: lint
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

app: $(STAMP)
	$(VENV)/bin/marimo run notebooks/app_hierarchical_vs_marginal.py

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(VENV)/bin/python bench/ml_speed.py
	$(VENV)/bin/python bench/bayes_speed.py
	$(VENV)/bin/python bench/bayes_variance_functions.py
	$(VENV)/bin/python bench/fixed_effect_tests.py
	$(VENV)/bin/python bench/dynamic_prediction.py
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m slow tests

clean:
	rm -rf $(VENV) site out
