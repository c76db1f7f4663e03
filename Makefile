# Two entry points do all set-up themselves (apt, venv, pip) and are idempotent:
#   sudo make demo   the conformance topology, programmed by ingressmesh, with real traffic
#   sudo make test   every test: rootless unit tests and the real-kernel conformance suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := .stamps

.PHONY: deps venv test unit kernel demo demo-keep demo-down bench clean

$(STAMPS):
	mkdir -p $(STAMPS)

deps: | $(STAMPS)
	@[ "$$(id -u)" = 0 ] || { echo "run as root: sudo make $(MAKECMDGOALS)"; exit 1; }
	sh scripts/install-deps.sh

$(STAMPS)/venv: setup.cfg pyproject.toml | $(STAMPS)
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(STAMPS)/venv

unit: venv
	$(PY) -m pytest -q tests/unit

kernel: venv
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q tests/kernel

test: venv
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q -rs tests

demo: venv
	$(PY) -m ingressmesh.testbed.demo

demo-keep: venv
	$(PY) -m ingressmesh.testbed.demo --keep

demo-down: venv
	$(PY) -m ingressmesh.testbed.demo --down

bench: venv
	$(PY) bench/control_plane.py

clean:
	rm -rf $(VENV) $(STAMPS) *.egg-info
