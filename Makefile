# Every target sets itself up on a fresh machine: a .venv, torch (the CPU wheel on
# this disk, pinned so pip never fetches a CUDA build), the package, system tools.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench gpu-check system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps lightly open_clip_torch  # peers as test oracles; --no-deps keeps torchvision out
	touch $(STAMP)

# espeak-ng speaks the captions; chromium renders the HTML report in tests.
system-deps:
	@command -v espeak-ng >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng chromium >/dev/null)

demo: $(STAMP) system-deps
	$(VENV)/bin/contrastlab demo

test: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist worksteal  # idle workers take queued tests: no long tail on one core

bench: $(STAMP)
	$(PY) -m pip install -q --no-deps lightly  # the peer; --no-deps keeps torchvision and another torch out
	$(PY) -m benchmarks.run

# The device check (benchmarks/gpu_check.py): CUDA-marked tests, the losses up to 65,536 pairs, 300 SimCLR steps of
# configs/simclr-resnet18-gpu.yaml, a torchrun run; under 8 minutes on one H200, a ~45 s dry run on a CPU. It uses the
# Python of an existing .venv (else $(PYTHON)) as it is: the CPU wheel pinned above must not replace a CUDA torch.
# Results: $$OUT/gpu_check.{json,md} when OUT is set, else gpu-check/.
GPU_PY ?= $(shell test -x $(PY) && echo $(PY) || echo $(PYTHON))
gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
