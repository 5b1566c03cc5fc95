# polar-rcnn: every entry point sets up what it needs first (idempotent, nothing re-downloaded).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.polar-rcnn-ready
DEMO_OUT ?= output/demo
BENCH_OUT ?= output/bench/benchmark
EVIDENCE_OUT ?= output/evidence

.PHONY: setup demo test bench evidence lock clean-venv

## setup: project-local virtualenv with the locked dependencies, detectron2 and polar-rcnn (editable)
setup: $(READY)

$(READY): requirements/lock.txt setup.py third_party/detectron2/compat.patch tools/provision_detectron2.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements/lock.txt
	$(PY) tools/provision_detectron2.py
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

## demo: synthetic polarization data -> train on CPU -> COCO AP table -> pictures
demo: $(READY)
	$(PY) tools/demo.py --output $(DEMO_OUT)

## test: the test suite (CPU, a few minutes)
test: $(READY)
	$(PY) -m pytest -q tests

## bench: polar branch cost vs vanilla Detectron2 (time, FLOPs, memory, mappers; see docs/PERFORMANCE.md)
## (1 torch thread: stable ratios on a shared 2-core machine; BENCH_ARGS="--threads 0 ..." for all cores)
bench: $(READY)
	$(PY) tools/benchmark.py --threads 1 --output $(BENCH_OUT) $(BENCH_ARGS)

## evidence: every variant x 3 seeds on synthetic stack + control data -> docs/RESULTS.md (~35 min on 2 CPU cores)
evidence: $(READY)
	$(PY) tools/evidence.py --output $(EVIDENCE_OUT) $(EVIDENCE_ARGS)

## lock: re-pin requirements/lock.txt from requirements/requirements.txt in a scratch venv
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -r requirements/requirements.txt
	{ head -n 2 requirements/lock.txt; .lock-venv/bin/pip freeze --all | grep -v '^pip=='; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt && rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
