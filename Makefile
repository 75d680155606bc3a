# `make site` and `make test` set up everything they need (a .venv with pinned
# packages from requirements.txt) on a fresh machine, GPU or not.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IMAGES ?=
ARGS   ?=
export DISABLE_MKDOCS_2_WARNING := true
export NO_MKDOCS_2_WARNING := true

.PHONY: site build serve test bench clean setup

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# Generator (exit 1 = some images were skipped: the site is still built, then make fails)
build: $(STAMP)
	@rc=0; $(BIN)/python -m generator build $(if $(IMAGES),--images $(IMAGES)) $(ARGS) || rc=$$?; \
	  if [ $$rc -gt 1 ]; then exit $$rc; fi; echo $$rc > .build-rc

site: build
	$(BIN)/mkdocs build --strict
	@du -sh site | sed 's/^/site size: /'
	@rc=$$(cat .build-rc); rm -f .build-rc; exit $$rc

serve: build
	$(BIN)/mkdocs serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python bench/bench_methods.py $(ARGS)

clean:
	rm -rf site site_src/generated .cache .build-rc .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
