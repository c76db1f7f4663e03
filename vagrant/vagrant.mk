# The Vagrant VM lab (vagrant/README.md), included by the top-level Makefile:
#   sudo make vagrant-box    build and cache the libvirt box once (scripts/vagrant-box)
#   sudo make vagrant-lab    bring the lab up (or bring a running one up to date): IMVAG_NODES=3
#   sudo make vagrant-test   the VM lab tests (tests/vagrant), bringing the lab up if needed
#   sudo make vagrant-down   destroy the VMs, stop libvirtd/virtlogd, remove the lab namespace
VAGRANT_GOALS := vagrant-box vagrant-lab vagrant-down vagrant-test vagrant-status
ifneq ($(filter $(VAGRANT_GOALS),$(MAKECMDGOALS)),)
ifneq ($(shell id -u),0)
$(error make $(filter $(VAGRANT_GOALS),$(MAKECMDGOALS)) needs root (libvirtd, network namespaces): run sudo make $(MAKECMDGOALS))
endif
endif

.PHONY: $(VAGRANT_GOALS)

vagrant-box:
	scripts/vagrant-box

vagrant-lab:
	scripts/vagrant-lab up

vagrant-status:
	scripts/vagrant-lab status

vagrant-down:
	scripts/vagrant-lab down

vagrant-test: venv
	scripts/vagrant-lab up
	IMVAG_REQUIRE_LAB=1 $(PY) -m pytest -q -rs -s -p no:cacheprovider tests/vagrant
