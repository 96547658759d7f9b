# Two set-up commands: `make demo` and `make test`. Each creates .venv when absent.
# torch is pinned to the CPU build 2.13.0 so that a CPU machine never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

# The image architectures need torchvision, which exists here only as a large CUDA build paired with a
# newer torch: it lives in its own venv so that .venv keeps the CPU torch 2.13.0.
IMG_VENV   := .venv-images
IMG_BIN    := $(IMG_VENV)/bin
IMG_TORCH  ?= torch==2.14.1 torchvision==0.29.1
IMG_STAMP  := $(IMG_VENV)/.installed

.PHONY: demo test test-images fuzz venv clean mutate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,onnx,study]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/medrobust demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The property-based suites of tests/fuzz with 50 times their `make test` examples (still seeded).
FUZZ_FACTOR ?= 50
fuzz: $(STAMP)
	MEDROBUST_FUZZ_FACTOR=$(FUZZ_FACTOR) $(BIN)/python -m pytest -q tests/fuzz --hypothesis-show-statistics

$(IMG_STAMP): pyproject.toml
	test -x $(IMG_BIN)/python || $(PYTHON) -m venv $(IMG_VENV)
	$(IMG_BIN)/python -m pip install -q $(IMG_TORCH)
	$(IMG_BIN)/python -m pip install -q -e ".[test,images,onnx,onnx-whitebox]"
	touch $(IMG_STAMP)

# tests/study needs the `study` extra, which only .venv has: its modules are not even collected here (under CI a
# missing extra fails at import, before `-m` could deselect them).
test-images: $(IMG_STAMP)
	$(IMG_BIN)/python -m pytest -q -m "images or onnx" --ignore=tests/study

# Mutation testing of the algorithm core (docs/mutation.md); not part of `make test`.
#   make mutate                         every module of tools/mutation/modules.toml
#   make mutate MODULE=attacks/pgd.py   one module (several: MODULE="attacks/pgd.py attacks/sap.py")
#   make mutate MUTATE_ARGS=--fresh     forget cached verdicts first (after deleting or weakening tests)
#   make mutate REPORT_ARGS=--stdout    print the report instead of rewriting docs/mutation.md
# Results stay in .mutmut/<module>/; the report in docs/mutation.md is rewritten from all of them.
MODULE      ?=
JOBS        ?= 2
NICE        ?= nice -n 19
MUTATE_ARGS ?=
REPORT_ARGS ?=

mutate: $(STAMP)
	test -x $(BIN)/mutmut || $(BIN)/python -m pip install -q -e ".[test,dev]"
	rc=0; $(NICE) $(BIN)/python tools/mutation/run.py $(foreach m,$(MODULE),--module $(m)) --jobs $(JOBS) $(MUTATE_ARGS) || rc=$$?; \
	$(BIN)/python tools/mutation/report.py $(REPORT_ARGS); exit $$rc

clean:
	rm -rf $(VENV) runs .pytest_cache .mutmut mutants
