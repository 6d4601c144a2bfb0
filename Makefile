# Quick start: `make demo` and `make test` each create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo demo-engine test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs the project (editable) with its test extras. Re-runs when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo is a real `stylize run` (Prefect flow stylize-collection, ephemeral) over the example manifest:
# outputs in demo-output/, report in demo-output/_reports/<run>/report.html. Offline: the ImageNet encoder
# when torchvision's file is cached, else random:0. Then the fast method: the four photos through the
# project's own offline Johnson model (builtin:johnson_mosaic) into demo-output/fast/.
DEMO_ENCODER = $(shell $(PY) -c "from stylecore.weights import imagenet_cache_path as p; print('imagenet' if p().is_file() else 'random:0')" 2>/dev/null || echo random:0)

demo: $(STAMP)
	$(PY) -m stylize_cli.main run examples/demo_manifest.csv --output demo-output --method gatys \
		--encoder $(DEMO_ENCODER) --size 160 --steps 60 --max-failed 0
	$(PY) -m stylize_cli.main run examples/demo_fast_manifest.csv --output demo-output/fast --method johnson \
		--model builtin:johnson_mosaic --size 256 --max-failed 0

# The same pairs through the engine alone (no Prefect), with a contact sheet.
demo-engine: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_feedforward.py
	$(PY) bench/bench_cpu_kernels.py
	$(PY) bench/bench_pipeline.py
	$(PY) bench/bench_shard.py --rows 96 --size 128
	$(PY) bench/bench_shard.py --simulate 150 --rows 768 --batch-sizes 8 0 256
	$(PY) bench/bench_shard.py --simulate 150 --rows 768 --batch-sizes 64 --write-rows 17
	$(PY) bench/bench_s3_shard.py
	$(PY) bench/bench_encode.py

clean:
	rm -rf demo-output .pytest_cache
