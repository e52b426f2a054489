# dgm-book: `make book` builds the executed site, `make test` runs every test.
# Both create .venv from the pinned requirements.txt on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# -W: warnings are errors; -n: nitpicky (every cross-reference must resolve)
JB_FLAGS := -W -n --keep-going

.PHONY: book test notebooks serve browser clean help
help:
	@echo "make book       build the executed site into _build/html"
	@echo "make test       build the site, then run all tests (what CI runs)"
	@echo "make notebooks  regenerate the Colab twins in notebooks/ and the code chapters export to dgm/"
	@echo "make serve      serve _build/html on http://localhost:8000"
	@echo "make clean      remove _build (the execution cache too)"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Executed outputs depend on the dgm package too: when it changes, drop the execution cache.
_build/.dgm-code: $(wildcard dgm/*.py)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/jupyter_execute
	mkdir -p _build && touch $@

# A failed build forgets its parsed pages, so the next run redoes them instead of passing stale.
book: $(STAMP) _build/.dgm-code
	$(BIN)/jupyter-book build . $(JB_FLAGS) || { rm -rf _build/.doctrees; exit 1; }

# Everything generated from the chapters: Colab twins and the package code they export (#@save).
notebooks: $(STAMP)
	$(BIN)/python -m tools.export
	$(BIN)/python -m tools.twins

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

test: $(STAMP) browser book
	$(BIN)/python -m pytest

serve:
	$(BIN)/python -m http.server --directory _build/html 8000

clean:
	rm -rf _build
