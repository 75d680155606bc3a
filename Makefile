# `make site` and `make test` set up everything they need (a .venv with pinned
# packages from requirements.txt) on a fresh machine, GPU or not.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IMAGES ?=
PROFILE ?=
ARGS   ?=
export DISABLE_MKDOCS_2_WARNING := true
export NO_MKDOCS_2_WARNING := true

MATHJAX := site_src/assets/mathjax/tex-mml-chtml.js

# Labelled photo sets the findings and the atlas read (Imagenette's validation photos, one ImageNet photo per
# class): in CNNVIS_DATA, default ~/.cache/cnnvis/data. A local mirror with the same layout beside the
# checkout (../shared: imagenette/val, imagenet-1k-sample) is used when it exists and CNNVIS_DATA is not set.
ifneq ($(wildcard ../shared/imagenette),)
export CNNVIS_DATA ?= $(abspath ../shared)
endif

.PHONY: site build plan serve test test-fast bench clean setup rehearse chromium data data-if-online

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# Headless Chromium for the browser test (Debian's package; Playwright drives it, never downloads its own)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "note: could not install chromium: the browser test will be skipped"

# Generator exit codes: 0 ok; 1 built, with skipped photos or models without weights (the site
# is still built; make fails only with STRICT=1); 2 bad input/config, 3 internal error, anything else (a
# signal): nothing built, so MkDocs must not run. The generator replaces its output folder
# only when it finished, so the pages MkDocs reads are always one whole run's.
build: $(STAMP) data-if-online
	@rm -f .build-rc; rc=0; $(BIN)/python -m generator build $(if $(IMAGES),--images $(IMAGES)) $(if $(PROFILE),--profile $(PROFILE)) $(ARGS) || rc=$$?; \
	  case $$rc in 0|1) echo $$rc > .build-rc ;; \
	  *) echo "generator failed (exit $$rc): the site was not built" >&2; exit $$rc ;; esac

# The plan only: calibrate, print estimated seconds per model and stage and the downloads, compute nothing
plan: $(STAMP)
	$(BIN)/python -m generator build --plan-only $(if $(IMAGES),--images $(IMAGES)) $(if $(PROFILE),--profile $(PROFILE)) $(ARGS)

# `make data` downloads what is missing (about 450 MB: checksums or file checks, resumes after a cut, nothing
# half-extracted), exit 2 offline. `build` (so `site`, `serve`) first runs `data --if-missing`: quiet when the
# data are there, a download when they are missing and the machine is online, a one-line note and on when
# offline (CNNVIS_OFFLINE=1 or no network): the build never fails for lack of data, and the pages that use
# them say so and name `make data`.
data: $(STAMP)
	$(BIN)/python -m generator data

data-if-online: $(STAMP)
	@$(BIN)/python -m generator data --if-missing || echo "note: python -m generator data failed (exit $$?): the build goes on without the data"

# MathJax for the formulas, served with the site (npm registry; the site still builds without it)
$(MATHJAX):
	@mkdir -p .cache/npm site_src/assets/mathjax
	@if command -v npm >/dev/null 2>&1 && (cd .cache/npm && npm pack -q mathjax@3.2.2 >/dev/null 2>&1); then \
	  tar xzf .cache/npm/mathjax-3.2.2.tgz -C site_src/assets/mathjax --strip-components=2 \
	    package/es5/tex-mml-chtml.js package/es5/output/chtml/fonts/woff-v2; \
	else echo "note: could not fetch MathJax with npm: formulas will show as TeX source"; fi

site: build $(MATHJAX)
	@test -f .build-rc || { echo "no finished generator run: the site was not built" >&2; exit 2; }
	$(BIN)/mkdocs build --strict
	@du -sh site | sed 's/^/site size: /'
	@rc=$$(cat .build-rc); rm -f .build-rc; \
	  if [ "$$rc" = 1 ]; then echo "note: the site was built, but photos were skipped or models had no weights (generator exit 1, see above)$(if $(STRICT),,; STRICT=1 makes this an error)"; fi; \
	  if [ "$$rc" = 1 ] && [ -n "$(STRICT)" ]; then exit 1; fi

serve: build $(MATHJAX)
	$(BIN)/mkdocs serve

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q --durations=15

# The quick lane while editing: everything except the end-to-end builds (marker `slow`); make test runs all
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

bench: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python bench/bench_methods.py $(ARGS)

clean:
	rm -rf site site_src/generated site_src/.generated.* site_src/assets/mathjax .cache .build-rc .pytest_cache .rehearsal
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

# The whole default build with random weights where real ones are missing: its own site in
# .rehearsal/site, a banner on every page; --timing prints seconds per model and stage.
rehearse: $(STAMP)
	$(BIN)/python -m generator rehearse --timing $(ARGS)
