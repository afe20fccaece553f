# ferry: `make demo` and `make test` are all a newcomer needs on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# Debian packages the tests drive for real: the registry, skopeo, redis, htpasswd, and what the real Harbor
# builds in ../shared/harbor need beside them (PostgreSQL, openssl, curl, xz); setpriv (util-linux) drops
# root's file-access override for the unreadable-source tests; Ceph's radosgw is the real S3 server of
# ../shared/s3 (registries on the s3 driver)
SYSTEM_TOOLS := docker-registry:docker-registry skopeo:skopeo redis-server:redis-server htpasswd:apache2-utils \
	openssl:openssl curl:curl xz:xz-utils setpriv:util-linux uuidgen:uuid-runtime
# installed without their recommendations, as ../shared/s3/README.md says (64 MB instead of hundreds)
S3_TOOLS := ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw ceph:ceph-common

.PHONY: demo test lint bench bench-scale venv system-deps clean kit man

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# compat: a plain path entry for the checkout (no import hook: 10 ms of every start, and mypy sees it)
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.installed

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing="$$missing postgresql"; \
	s3=""; \
	for pair in $(S3_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || s3="$$s3 $$pkg"; \
	done; \
	if [ -n "$$missing$$s3" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing$$s3"; \
	    apt-get update -qq; \
	    if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; fi; \
	    if [ -n "$$s3" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$s3 >/dev/null || exit 1; fi; \
	  else \
	    echo "missing Debian packages:$$missing$$s3 -- run: sudo apt-get install$$missing$$s3" >&2; exit 1; \
	  fi; \
	fi

demo: venv
	$(BIN)/ferry demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv system-deps lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q

bench: venv system-deps
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m bench.run

# 20k and 100k tags: memory, time growth, per-item speed (bench/scale.py; trees kept in bench/out)
bench-scale: venv system-deps
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m bench.scale

# the offline install kit for air-gapped hosts (README: "Install on an air-gapped host"); needs PyPI or a mirror
kit: venv
	$(BIN)/ferry kit -o dist/ferry-kit --force

# ferry(1), rendered from the same help as --help (every kit carries it too)
man: venv
	mkdir -p build
	$(BIN)/ferry manpage -o build/ferry.1

clean:
	rm -rf $(VENV) bench/out .pytest_cache .mypy_cache .ruff_cache dist build
