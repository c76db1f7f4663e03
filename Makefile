# Two entry points do all set-up themselves (apt, venv, pip) and are idempotent:
#   sudo make lab    a real 3-node swarm lab, ingressmesh controller + agents, the counter demo stack
#   sudo make test   every test: unit, real-kernel conformance, the real swarm lab, IPVS under QEMU
# `make unit` runs rootless (it needs python3 >= 3.10 with python3-venv).
VENV  := .venv
PY    := $(VENV)/bin/python
# The install stamp lives inside the venv: deleting .venv rebuilds everything.
STAMP := $(VENV)/.installed

# Targets that need network namespaces and nftables: refuse them early without root.
ROOT_GOALS := test host-suites host-timing kernel kernel-lab ipvs-swarm ipvs-swarm-images ipvs-swarm-guest ipvs-swarm-point4 ipvs-swarm-l7 ipvs-swarm-stack bench-side-by-side swarm swarm-stack lab lab-down install-systemd demo demo-keep demo-down bench bench-ipvs
ifneq ($(filter $(ROOT_GOALS),$(MAKECMDGOALS)),)
ifneq ($(shell id -u),0)
$(error make $(filter $(ROOT_GOALS),$(MAKECMDGOALS)) needs root (network namespaces, nftables): run sudo make $(MAKECMDGOALS); `make unit` runs rootless)
endif
endif

.DEFAULT_GOAL := help
.PHONY: help deps venv test host-suites host-timing unit kernel kernel-lab ipvs-swarm ipvs-swarm-images ipvs-swarm-guest ipvs-swarm-point4 ipvs-swarm-l7 ipvs-swarm-stack bench-side-by-side swarm swarm-stack lab lab-down install-systemd demo demo-keep demo-down bench bench-ipvs clean docs docs-serve plots cli-docs

help:
	@echo "sudo make lab     3-node swarm lab + ingressmesh + counter demo stack (lab-down removes it)"
	@echo "sudo make test    every test (unit, real kernel, real swarm lab, IPVS under QEMU)"
	@echo "sudo make swarm-stack  the routing and stack tests with ingressmesh as a swarm stack"
	@echo "sudo make swarm   the real swarm lab tests only;  sudo make install-systemd  the units"
	@echo "sudo make demo    2-node mesh in network namespaces with real traffic (demo-keep, demo-down)"
	@echo "sudo make kernel  the real-kernel suite only;  sudo make bench  every benchmark (bench/), then the side-by-side table and ipvs-swarm-point4"
	@echo "sudo make host-suites  unit, l7 and real-kernel suites (the ones needing no swarm lab) but the timing ones"
	@echo "sudo make host-timing  the tests with a time bound under their own load (make test runs them alone)"
	@echo "sudo make kernel-lab  conformance suite with the ipvs backend in a QEMU kernel (part of test)"
	@echo "sudo make ipvs-swarm  the swarm lab in that kernel, next to Docker's own IPVS mesh (part of test)"
	@echo "sudo make ipvs-swarm-point4  tests/swarm's routing/health/update tests with IPVS in that kernel"
	@echo "sudo make ipvs-swarm-l7  the L7 proxy through our IPVS mesh next to Docker's in that kernel"
	@echo "sudo make ipvs-swarm-stack  ingressmesh as a stack next to Docker's mesh in that kernel"
	@echo "sudo make bench-side-by-side  every row of docs/side-by-side.md measured in that kernel (~100 min)"
	@echo "make unit         rootless unit tests"
	@echo "make docs         the docs site into site/ (docs-serve: http://127.0.0.1:8000); make plots  bench plots"
	@echo "make clean        remove the venv"

# As root: apt-get install what is missing. Otherwise: only check python3 (>= 3.10, venv).
deps:
	@sh scripts/install-deps.sh "$(or $(MAKECMDGOALS),deps)"

# Order-only on deps: checked every time, but it never makes the stamp stale by itself.
$(STAMP): setup.cfg pyproject.toml | deps
	[ -x $(VENV)/bin/pip ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

unit: venv
	$(PY) -m pytest -q tests/unit

kernel: venv
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q tests/kernel

# The work is CPU-bound and this machine has 2 cores.  Phase 0: `make host-timing` alone (~1.5 min):
# the tests that bound time under load they make themselves.  Phase 1: `make ipvs-swarm-guest` alone: its
# QEMU guest keeps both cores busy (the guest's dockerds alone saturate its two vCPUs while Swarm
# starts tasks), so whatever ran beside it only stretched it (the host suites beside it: 37 min).
# Phase 2: the swarm lab suites (native, ~1 of the 2 cores busy) beside a chain at nice 10: the
# host suites that need no swarm lab (unit, l7, kernel but the timing ones: ~5 min), `make kernel-lab` (the other QEMU
# guest, ~16 min there) and `make swarm-stack` (its own lab names: tests/swarm/conftest.py), so
# that the lab's timing (1 s health budgets) keeps the CPU it needs and the chain takes what is
# left.  Beside the swarm guest kernel-lab took ~20 min and the two guests starved each other
# (make test at 877ff1d: the guest's lab up 562 s instead of 231 s); beside the swarm lab suites
# (runs at 8fced26, 6baa521) the swarm guest was starved to 54-58 min and failed.  The chained
# jobs' logs are printed once tests/swarm and the chain are done; any failure fails the target,
# the other jobs still run.
CHAIN := host-suites kernel-lab swarm-stack
test: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site
	$(MAKE) --no-print-directory ipvs-swarm-images
	@mkdir -p $(LAB_OUT); for job in $(CHAIN); do rm -f $(LAB_OUT)/$$job.rc; done
	@echo "phase 0: make host-timing, alone"
	rc=0; $(MAKE) --no-print-directory host-timing || { echo "make host-timing FAILED"; rc=1; }; \
	echo "phase 1: make ipvs-swarm-guest, alone"; \
	$(MAKE) --no-print-directory ipvs-swarm-guest || { echo "make ipvs-swarm-guest FAILED"; rc=1; }; \
	echo "phase 2: tests/swarm beside make $(CHAIN) in turn (nice 10), logs: $(LAB_OUT)/JOB.log"; \
	{ for job in $(CHAIN); do \
	    nice -n 10 $(MAKE) --no-print-directory $$job >$(LAB_OUT)/$$job.log 2>&1; echo $$? >$(LAB_OUT)/$$job.rc; \
	  done; } & \
	beside=$$!; \
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q -rs -s --durations=25 --junitxml=$(LAB_OUT)/junit-swarm.xml \
	    tests/swarm --ignore=tests/swarm/test_stack_install.py || rc=1; \
	echo "waiting for make $(CHAIN)"; wait $$beside; \
	for job in $(CHAIN); do \
	    echo "----- make $$job -----"; cat $(LAB_OUT)/$$job.log; \
	    [ "$$(cat $(LAB_OUT)/$$job.rc 2>/dev/null)" = 0 ] || { echo "make $$job FAILED"; rc=1; }; \
	done; \
	exit $$rc

# The suites that need no swarm lab (make test runs them beside tests/swarm; junit-host.xml), but
# for the tests with a time bound under load they make themselves (marked timing): host-timing
# runs those alone, first (~1.5 min).  At nice 10 beside the lab one fell to 0.18 of its median
# rate, another missed its 1 s follow bound (make test here at 30f85ce and at 719077b).
host-suites: venv
	mkdir -p $(LAB_OUT)
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q -rs --durations=10 --junitxml=$(LAB_OUT)/junit-host.xml \
	    -m "not timing" tests/unit tests/l7 tests/kernel

host-timing: venv
	mkdir -p $(LAB_OUT)
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q -rs --durations=10 --junitxml=$(LAB_OUT)/junit-host-timing.xml \
	    -m timing tests/unit tests/l7 tests/kernel

# The routing tests again on a fresh lab, with ingressmesh installed as a swarm stack
# (`ingressmesh install --stack`) instead of host processes, then the stack's own tests.
swarm-stack: venv
	INGRESSMESH_REQUIRE_KERNEL=1 INGRESSMESH_LAB_MESH=stack $(PY) -m pytest -q -rs -s \
	    tests/swarm/test_mesh_routing.py tests/swarm/test_stack_install.py

# The same conformance suite (and the IPVS tests) with the ipvs backend, inside Debian's stock
# kernel under QEMU (this machine's kernel has no IPVS).  Results: $(LAB_OUT)/junit-ipvs.xml.
# ~9 min beside the swarm guest in CI, ~20 min here (2026-12-07); make test now runs it beside the
# swarm lab suites at nice 10 (see test), hence the generous limit.
LAB_OUT := .lab-results
kernel-lab: venv
	mkdir -p $(LAB_OUT)
	scripts/kernel-lab --timeout 3600 --share $(LAB_OUT) --env INGRESSMESH_BACKEND=ipvs \
	    --env INGRESSMESH_REQUIRE_KERNEL=1 --env INGRESSMESH_REQUIRE_IPVS=1 -- \
	    sh -c '$(CURDIR)/$(PY) -m pytest -q -rs -p no:cacheprovider --junitxml="$$KERNEL_LAB_SHARE/junit-ipvs.xml" \
	    tests/kernel/test_conformance.py tests/kernel/test_ipvs.py tests/kernel/test_ipvs_next_to_docker.py \
	    tests/kernel/test_source_ip_kernel.py'

# The 3-node swarm lab inside that kernel (4 GB guest), where Docker's own IPVS mesh works: Docker
# alone, then ingressmesh with nftables and with IPVS taking over and handing back, in one boot and
# one pytest process (the L7 proxy through our IPVS mesh and ingressmesh as a stack have guests of
# their own: ipvs-swarm-l7, ipvs-swarm-stack).  Results: $(LAB_OUT)/junit-ipvs-swarm.xml and ipvs_swarm.json.
# The lab there unpacks busybox and the proxy image at `up` from a ready image store, point 4
# imports the python image, all from the host's image cache (built here first).  The side-by-side table's costly rows (rates, health, UDP,
# node drain) are measured by bench-side-by-side, not here (tests/ipvs_swarm/table_rows.py).
ipvs-swarm: ipvs-swarm-images
	$(MAKE) --no-print-directory ipvs-swarm-guest

ipvs-swarm-images: venv
	mkdir -p $(LAB_OUT)
	$(PY) -m ingressmesh.lab images busybox proxy python  # the guest cannot build them (no network): cached here
	@# The guest lab's nodes start on a copy of this store (no import there); without it they import.
	$(PY) -m ingressmesh.lab image-store busybox proxy || echo "no image store (see above): the guest's lab imports its images"

IPVS_SWARM_TIMEOUT ?= 4200
SIDE_BY_SIDE ?= 0
# make test leaves the stack module to ipvs-swarm-stack (its own guest): ~10 min that CI's 90 min
# could not pay on a slow host; and the L7 module to ipvs-swarm-l7: ~6 min of the guest (its proxy
# took 182 s from creation to healthy under emulation) that kept make test over 60 min (72 at
# 6cebab1).  IPVS_SWARM_LEAVE_OUT= (empty) runs both here too.
IPVS_SWARM_LEAVE_OUT ?= --ignore=tests/ipvs_swarm/test_stack_handback_ipvs.py \
    --ignore=tests/ipvs_swarm/test_proxy_and_health_with_ipvs.py
ipvs-swarm-guest: venv
	mkdir -p $(LAB_OUT)
	KERNEL_LAB_MEMORY_MB=4096 scripts/kernel-lab --timeout $(IPVS_SWARM_TIMEOUT) --share $(LAB_OUT) \
	    --env INGRESSMESH_REQUIRE_KERNEL=1 --env INGRESSMESH_REQUIRE_IPVS=1 \
	    --env INGRESSMESH_SIDE_BY_SIDE=$(SIDE_BY_SIDE) -- \
	    scripts/kernel-lab-guest/swarm-host sh -c '$(CURDIR)/$(PY) -m pytest -q -rs -s -p no:cacheprovider \
	    --durations=0 --junitxml="$$KERNEL_LAB_SHARE/junit-ipvs-swarm.xml" tests/ipvs_swarm \
	    --ignore=tests/ipvs_swarm/test_swarm_tests_with_ipvs.py $(IPVS_SWARM_LEAVE_OUT)'

# The side-by-side table (docs/side-by-side.md, bench/results/ipvs_swarm.json): the same guest run
# with every row measured for all three meshes (~100 min on a slow host), then rendered.
bench-side-by-side: ipvs-swarm-images
	$(MAKE) --no-print-directory ipvs-swarm-guest SIDE_BY_SIDE=1 IPVS_SWARM_TIMEOUT=9000 LAB_OUT=$(LAB_OUT)/side-by-side \
	    IPVS_SWARM_LEAVE_OUT=
	$(PY) bench/side_by_side.py $(LAB_OUT)/side-by-side/ipvs_swarm.json

# Issue 18 point 4 on its own guest (~20 min): tests/swarm's routing, health and rolling-update tests
# with the IPVS backend on the same rig.  Not in `make test`: with it the guest took 49 min beside
# kernel-lab and `make test` would near CI's 90 (docs/tests.md).  Results: junit-ipvs-point4.xml.
ipvs-swarm-point4: ipvs-swarm-images
	KERNEL_LAB_MEMORY_MB=4096 scripts/kernel-lab --timeout 3600 --share $(LAB_OUT) \
	    --env INGRESSMESH_REQUIRE_KERNEL=1 --env INGRESSMESH_REQUIRE_IPVS=1 -- \
	    scripts/kernel-lab-guest/swarm-host sh -c '$(CURDIR)/$(PY) -m pytest -q -rs -s -p no:cacheprovider \
	    --junitxml="$$KERNEL_LAB_SHARE/junit-ipvs-point4.xml" tests/ipvs_swarm/test_swarm_tests_with_ipvs.py'

# Issue 18 point 5 on its own guest (~12 min): the L7 proxy service through our IPVS mesh next to
# Docker's, a labelled host served through every node (the module starts its own IPVS mesh when it
# runs alone).  Not in `make test` (see IPVS_SWARM_LEAVE_OUT).  Results: junit-ipvs-l7.xml.
ipvs-swarm-l7: ipvs-swarm-images
	KERNEL_LAB_MEMORY_MB=4096 scripts/kernel-lab --timeout 2400 --share $(LAB_OUT) \
	    --env INGRESSMESH_REQUIRE_KERNEL=1 --env INGRESSMESH_REQUIRE_IPVS=1 -- \
	    scripts/kernel-lab-guest/swarm-host sh -c '$(CURDIR)/$(PY) -m pytest -q -rs -s -p no:cacheprovider \
	    --junitxml="$$KERNEL_LAB_SHARE/junit-ipvs-l7.xml" tests/ipvs_swarm/test_proxy_and_health_with_ipvs.py'

# Issue 18's stack install next to Docker's mesh on its own guest (~15 min): ingressmesh deployed
# as a stack takes over, a dockerd restart does not take the traffic back, `docker stack rm` hands
# back with no failed request.  Not in `make test` (see IPVS_SWARM_LEAVE_OUT).  Results: junit-ipvs-stack.xml.
ipvs-swarm-stack: ipvs-swarm-images
	KERNEL_LAB_MEMORY_MB=4096 scripts/kernel-lab --timeout 2400 --share $(LAB_OUT) \
	    --env INGRESSMESH_REQUIRE_KERNEL=1 --env INGRESSMESH_REQUIRE_IPVS=1 -- \
	    scripts/kernel-lab-guest/swarm-host sh -c '$(CURDIR)/$(PY) -m pytest -q -rs -s -p no:cacheprovider \
	    --junitxml="$$KERNEL_LAB_SHARE/junit-ipvs-stack.xml" tests/ipvs_swarm/test_stack_handback_ipvs.py'

swarm: venv
	INGRESSMESH_REQUIRE_KERNEL=1 $(PY) -m pytest -q -rs -s tests/swarm --ignore=tests/swarm/test_stack_install.py
	$(MAKE) --no-print-directory swarm-stack

BACKEND ?= auto
MESH ?= stack
lab: venv
	$(PY) -m ingressmesh.testbed.lab_demo --backend $(BACKEND) --mesh $(MESH)

lab-down: venv
	$(PY) -m ingressmesh.testbed.lab_demo --down

install-systemd:
	sh scripts/install-systemd.sh

demo: venv
	$(PY) -m ingressmesh.testbed.demo --backend $(BACKEND)

demo-keep: venv
	$(PY) -m ingressmesh.testbed.demo --keep --backend $(BACKEND)

demo-down: venv
	$(PY) -m ingressmesh.testbed.demo --down

bench: venv
	$(PY) bench/control_plane.py
	$(PY) bench/live_pipeline.py
	$(PY) bench/provider_poll.py
	$(PY) bench/l7.py
	$(PY) bench/l7_tls.py
	$(PY) bench/swarm_burst.py
	$(PY) bench/data_path.py
	$(PY) bench/fast_path_fanout.py
	$(MAKE) --no-print-directory bench-ipvs
	$(MAKE) --no-print-directory plots
	$(MAKE) --no-print-directory bench-side-by-side  # ~100 min: docs/side-by-side.md (no plot)
	$(MAKE) --no-print-directory ipvs-swarm-point4  # the rig's rolling update under load with IPVS (~13 min)

# The VIP path with the nftables and the IPVS backend in one run of a kernel that has IPVS.
bench-ipvs: venv
	mkdir -p $(LAB_OUT)/bench
	scripts/kernel-lab --timeout 1500 --share $(LAB_OUT)/bench -- \
	    sh -c '$(CURDIR)/$(PY) bench/data_path_ipvs.py --out "$$KERNEL_LAB_SHARE/data_path_ipvs.json"'
	cp $(LAB_OUT)/bench/data_path_ipvs.json bench/results/data_path_ipvs.json

# The docs site (MkDocs, Material theme): docs/ + mkdocs.yml -> site/.  --strict: a broken link or
# a page missing from the nav is an error (`make test` runs the same build first).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# Plots of bench/results/*.json into docs/img/bench/ (rootless; the end of `make bench`).
plots: venv
	$(PY) bench/plots.py

# docs/cli.md from the click commands (tests/unit/test_cli_reference.py checks it).
cli-docs: venv
	$(PY) scripts/cli-reference

clean:
	rm -rf $(VENV) *.egg-info $(LAB_OUT)

# The Vagrant VM lab (vagrant-box, vagrant-lab, vagrant-down, vagrant-test): vagrant/README.md
-include vagrant/vagrant.mk
