# Cross-Modal Learning, Hands-On: set-up, build and test.
#   make book     build the website into _build/html
#   make test     unit tests, notebook checks, book build, then every notebook with nbval
#   make lab      JupyterLab with the course's environment
#   make execute  re-execute every notebook in place (sorted, fresh kernel each)
#   make bench    time and peak memory per notebook into bench/notebooks.md
#                 (e.g. make bench BENCH_ARGS="--cpus 2" to use 2 CPUs only)
#   make seeds    every notebook under seeds 1 and 2 (MMUTILS_SEED), pass/fail into bench/seeds.md
#   make student  student copies of the notebooks (no solutions, "your turn" stubs) into student/
#   make site-check  build the book, open every page in headless Chromium, fail on a console error
#   make clean    remove build outputs and caches, trained models cached in .cache included (make distclean: the venv too)
# Every target creates .venv and installs the tested versions first if needed.

SHELL   := bash
PYTHON3 ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BENCH_ARGS ?=
SEEDS_ARGS ?=

# Same hash order in every run (sets, dict iteration of hashed keys).
export PYTHONHASHSEED := 0

.PHONY: setup book test lab execute bench seeds student site-check clean distclean

setup: $(STAMP)

# Reinstalled only when the package metadata or the tested versions change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON3) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going --all
	@echo "The website is in _build/html/index.html"

# Runs both suites and fails if either fails.
test: $(STAMP)
	@status=0; \
	$(BIN)/pytest || status=1; \
	$(BIN)/pytest --nbval-lax --nbval-sanitize-with tests/sanitize.cfg notebooks/ || status=1; \
	exit $$status

lab: $(STAMP)
	$(BIN)/jupyter lab

execute: $(STAMP)
	$(BIN)/python tests/tools/execute_notebooks.py

bench: $(STAMP)
	$(BIN)/python tests/tools/bench_notebooks.py $(BENCH_ARGS)

seeds: $(STAMP)
	$(BIN)/python tests/tools/seeds_notebooks.py $(SEEDS_ARGS)

student: $(STAMP)
	$(BIN)/python tests/tools/make_student.py

# Needs Chromium or Chrome (Debian/Ubuntu: apt-get install chromium).
site-check: book
	$(BIN)/python tests/tools/site_check.py

clean:
	rm -rf _build student .pytest_cache .jupyter_cache .cache
	find . -path ./$(VENV) -prune -o \
		\( -name __pycache__ -o -name .ipynb_checkpoints -o -name .pytest_cache \) \
		-type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
