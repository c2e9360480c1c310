# Two commands do everything: `make lab` to study, `make test` to check the whole course.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab test install data unit notebooks notebook browser book bench slides solutions assignments clean-outputs hub hub-stop hub-load

# JupyterLab refuses to start as root unless told to (containers and CI machines often run as root)
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: data                     ## open JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/

test: data                    ## unit tests + every notebook in fast mode
	COURSE_FAST=1 $(PY) -m pytest

install: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet -e .
	touch $(STAMP)

data: install                 ## Fashion-MNIST into data/ (offline copy or download)
	$(PY) -m helpers prepare fashion-mnist

unit: data                    ## only the unit tests of helpers
	COURSE_FAST=1 $(PY) -m pytest tests --deselect tests/test_browser.py --deselect tests/test_book.py

notebooks: data               ## only the notebooks (nbval, fast mode; each followed by its solutions)
	COURSE_FAST=1 $(PY) -m pytest build/nbval

notebook: data                ## one or more notebooks with their solutions, fast mode: make notebook NB="03 05"
	COURSE_FAST=1 $(PY) -m helpers.classroom check $(NB)

browser: data                 ## the browser test on every notebook's panel (make test opens a slice; screenshots in test-output/browser/)
	COURSE_BROWSER=all COURSE_FAST=1 $(PY) -m pytest tests/test_browser.py

bench: data                   ## the full compression pipeline on both models (20+ min on 2 cores; not part of make test)
	$(PY) -m helpers.pipeline

book: data                    ## the course as a website in build/book/ (Jupyter Book; every notebook run in fast mode; opens offline)
	COURSE_FAST=1 $(PY) -m helpers.book

slides: data                  ## every notebook as a reveal.js deck in build/slides/ (run in fast mode; opens offline)
	COURSE_FAST=1 $(PY) -m helpers.classroom slides

assignments: install          ## an nbgrader course folder in build/assignments/ (docs/teaching.md: release, collect, grade)
	$(PY) -m helpers.assignments

solutions: install            ## complete copies (notebook + its solutions) in build/solutions/
	$(PY) -m helpers.classroom solutions

clean-outputs: install        ## re-run notebooks, keep only the outputs of NBVAL_CHECK_OUTPUT cells
	COURSE_FAST=1 $(PY) tests/checked_outputs.py notebooks/*.ipynb

hub: data                     ## JupyterHub for a class on http://127.0.0.1:8000, as root (docs/teaching.md, "Running a class")
	$(PY) -m helpers.hub start

hub-stop: install             ## stop the hub, its proxy and every student's server and kernel, by PID
	$(PY) -m helpers.hub stop

# N simulated students run one notebook at once (as root); figures in data/results/hub_load.json.
# make hub-load HUB_STUDENTS=1,4,8 HUB_MODE=fast (the default) or HUB_MODE=full (trains for real: much longer)
HUB_STUDENTS ?= 1,4,8
HUB_MODE ?= fast
hub-load: data                ## load test of the hub: 1, 4, 8 students press "Run all" together (not part of make test)
	COURSE_FAST=$(if $(filter full,$(HUB_MODE)),0,1) $(PY) -m helpers.hub_load --students $(HUB_STUDENTS)
