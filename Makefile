# lr0fm: two entry points. `make run` = default offline benchmark; `make test` = test suite.
# Both create .venv/ and install what they need (Debian packages included) on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# the offline default datasets; the tests also need clip-art (LR-TK0 data), WordNet, a browser
# and a real one-node SLURM with accounting (tests/realclusters.py starts its own daemons)
DEB_RUN := tuxpaint-stamps-default dataset-fashion-mnist wordnet
DEB_TEST := $(DEB_RUN) openclipart-png chromium slurm-wlm munge slurmdbd mariadb-server
# package:service that a package's postinst starts (where no policy-rc.d forbids it), stopped right
# after installing it: only the tests' own daemons run (tests/realclusters.py). SLURM's services
# do not start: Debian ships no /etc/slurm/slurm.conf.
DEB_SERVICES := munge:munge mariadb-server:mariadb
# torch + torchvision pair that pip takes from this machine's disk (CUDA build, runs on CPU too)
TORCH := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test test-fast lint deb deb-run deb-test venv venv-dev gpu-check-prep clean

# `make run` needs the plain install (plus nltk, which reads the Debian WordNet for `lr0fm analyze
# predictions` on its results); the tests and the linters need every extra ('.[dev]')
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[wordnet]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

venv-dev: $(VENV)/.installed-dev

deb-run:
	@$(MAKE) --no-print-directory deb PKGS="$(DEB_RUN)"

deb-test:
	@$(MAKE) --no-print-directory deb PKGS="$(DEB_TEST)"

deb:
	@missing=$$(for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  for ps in $(DEB_SERVICES); do for p in $$missing; do [ "$$p" != "$${ps%%:*}" ] || \
	    $$SUDO service $${ps#*:} stop >/dev/null 2>&1 || true; done; done; \
	fi

run: deb-run venv
	$(VENV)/bin/lr0fm eval --model conse-effnet-lite0 --dataset tuxpaint
	$(VENV)/bin/lr0fm eval --model conse-effnet-lite0 --dataset fashion_mnist --limit $(or $(FASHION_LIMIT),500)
	$(VENV)/bin/lr0fm report

# the layers contract (pyproject.toml [tool.importlinter]), dead code (vulture) and ruff
# (pyproject.toml [tool.ruff]) first: seconds
lint: venv-dev
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/vulture
	$(VENV)/bin/ruff check --no-cache src tests benchmarks

test: deb-test venv-dev lint
	$(PY) -m pytest -q -ra

test-fast: deb-test venv-dev
	$(PY) -m pytest -q -ra -m "not slow"

# what benchmarks/gpu_check.sh needs on a GPU machine that has torch but no registry (docs/performance.md
# "GPU check"): .whl/ (open_clip, its two small dependencies, CLIP_benchmark, and nvImageCodec with the
# nvjpeg it loads, for that machine's Python 3.12 and CUDA 13) and .tux/ (TuxPaint's photos as JPEGs); both
# ignored by git, carried to the machine
GPU_WHEELS := open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5 clip-benchmark==1.6.2 \
  nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43
gpu-check-prep: deb-run venv
	rm -rf .whl && $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	$(PY) benchmarks/decoder_diff.py --export-tuxpaint .tux

clean:
	rm -rf $(VENV) lr0fm-results .whl .tux
