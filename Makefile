# Two commands matter: `make demo` and `make test`. Both build their own virtual
# environment on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch: a bare `torch` requirement could pull a multi-GB CUDA build.
# bench/cpu-torch.sh says where it comes from (a local wheel, PyTorch's CPU index, or the default).
TORCH := torch==2.13.0

.PHONY: demo test test-python test-web bench bench-sweep bench-images bench-targets fixture clean

$(VENV)/.ready-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	bash bench/cpu-torch.sh $(PY) "$(TORCH)"
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['$*']))" > $(VENV)/requirements-$*.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements-$*.txt "$(TORCH)"
	touch $@

demo: $(VENV)/.ready-bench
	$(PY) -m bench.run --quick

# The benchmark in three processes of one thread each (its times are CPU times), each a share of the method
# sweep, of every image at the node's settings and of the speed targets; then the node default's gate takes
# its exam, and the README's and docs' parts are rendered from the results.
bench: $(VENV)/.ready-bench
	rm -f bench/results/targets.json bench/results/target_seeds.json
	$(MAKE) -j3 bench-sweep bench-images bench-targets
	$(PY) -m bench.gate_exam
	$(PY) -m bench.report

bench-sweep: $(VENV)/.ready-bench
	$(PY) -m bench.run --no-report --families flux_deep wan_rough
	$(PY) -m bench.target_seeds --families flux_deep flux_holdout

bench-images: $(VENV)/.ready-bench
	$(PY) -m bench.images
	$(PY) -m bench.run --no-report --families qwen
	$(PY) -m bench.targets --families wan_holdout_rough
	$(PY) -m bench.target_seeds --families wan_deep wan_holdout_rough

bench-targets: $(VENV)/.ready-bench
	$(PY) -m bench.run --no-report --families wan_deep
	$(PY) -m bench.targets --families flux_deep wan_deep flux_holdout

test-python: $(VENV)/.ready-test
	$(PY) -m pytest

# The widget: node --test on the drawing code, then the real widget in headless Chromium
# (installs Debian's chromium and npm's playwright-core on first use).
test-web:
	bash tests/web.sh

# The widget tests' payload, recorded from a run of the node with its current defaults.
fixture: $(VENV)/.ready-bench
	$(PY) tests/browser/record_fixture.py

test: test-python test-web

clean:
	rm -rf $(VENV) node_modules
