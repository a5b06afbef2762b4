# Two entry points (README Quickstart): `make run` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test samples clean prometheus

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

test: $(STAMP) prometheus
	$(BIN)/python -m pytest -q

samples: $(STAMP)
	$(BIN)/python -m sample_traces.generate

clean:
	rm -rf $(VENV) build *.egg-info
