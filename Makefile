# dgm-book: `make book` builds the executed site, `make test` runs every test.
# Both create .venv from the pinned requirements.txt on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# -W: warnings are errors; -n: nitpicky (every cross-reference must resolve)
JB_FLAGS := -W -n --keep-going

.PHONY: book pdf test notebooks serve browser clean help
help:
	@echo "make book       build the executed site into _build/html, and its PDFs (make pdf)"
	@echo "make pdf        print the formula sheet and the mock exams to _build/pdf (after make book)"
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
# The site links the PDFs of the formula sheet and the mock exams, so a build prints them too.
book: $(STAMP) browser _build/.dgm-code
	$(BIN)/jupyter-book build . $(JB_FLAGS) || { rm -rf _build/.doctrees; exit 1; }
	$(BIN)/python -m tools.pdf

# The formula sheet and the mock exams (with and without solutions) as PDFs in _build/pdf/,
# printed from the built site by headless chromium (tools/pdf.py).
pdf: $(STAMP) browser
	$(BIN)/python -m tools.pdf

# Everything generated from the chapters: Colab twins and the package code they export (#@save).
notebooks: $(STAMP)
	$(BIN)/python -m tools.export
	$(BIN)/python -m tools.twins

# Debian's chromium for the browser tests and the PDFs (Playwright drives it; no browser
# download), and poppler-utils (pdftotext, pdfinfo) for the tests that read the PDFs.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/pdftotext ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium poppler-utils >/dev/null; \
	fi

test: $(STAMP) browser book
	$(BIN)/python -m pytest

serve:
	$(BIN)/python -m http.server --directory _build/html 8000

clean:
	rm -rf _build
