# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch: the CPU build where none is installed (this pinned release is a CPU wheel on the
# machines uniscene is developed on; on a GPU cluster install your CUDA torch first).
TORCH_SPEC ?= torch==2.13.0
NUSCENES_DEVKIT ?= nuscenes-devkit==1.2.0

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# The last step puts the slurm profile in your Snakemake config folder (for `snakemake --profile
# slurm`), unless a profile of that name is there already: that one is kept.
$(VENV)/.installed: pyproject.toml Makefile
	tools/install-system-packages
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[poisson,test]"
	$(PY) -m pip install -q --no-deps "$(NUSCENES_DEVKIT)"
	$(VENV)/bin/uniscene install-profile slurm --if-missing
	touch $@

# The default workflow on the embedded synthetic dataset, then its HTML report.
demo: setup
	. $(VENV)/bin/activate && snakemake --profile profiles/local all
	. $(VENV)/bin/activate && snakemake --report results/report.html
	@echo "Each stage's share of the run's job time (results/report/stage_times.html):"
	@cat logs/report_stage_times/report.log

test: setup
	. $(VENV)/bin/activate && python -m pytest -q tests

bench: setup
	. $(VENV)/bin/activate && benchmarks/run_all.sh results/benchmarks.jsonl

clean:
	rm -rf results logs data/synthetic .snakemake
