# One command to set up and run each main job. Set-up is a local virtualenv in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install  ## set up, then run the main job
	$(BIN)/harmonia demo

test: install  ## set up, then run the linter and the test suite (tests and docstring examples)
	$(BIN)/ruff check harmonia tests benchmarks
	$(BIN)/python -m pytest -q

bench: install  ## benchmarks (print ratios measured in one run)
	# attack peers for bench_attacks.py; --no-deps: torchattacks pins an old requests, adv-lib pulls visdom (logging only)
	# horama for bench_featviz.py (PyTorch MACO; of its deps only einops is not already ours)
	$(BIN)/python -m pip install --quiet --no-deps adv-lib==0.2.8 torchattacks==3.5.1 horama==0.3.0 einops==0.8.2
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
