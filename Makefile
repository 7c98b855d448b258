# tvmq quick start: `make demo` (sets everything up, then runs the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup toolchain demo test lint clean

# tvmq.device needs the Cortex-M cross compiler, newlib (rdimon.specs: semihosting) and QEMU.
TOOLCHAIN_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
TOOLCHAIN_OK := command -v arm-none-eabi-gcc >/dev/null && command -v arm-none-eabi-size >/dev/null \
	&& command -v qemu-system-arm >/dev/null && test -f "$$(arm-none-eabi-gcc -print-file-name=rdimon.specs)"
APT_INSTALL := apt-get update && apt-get install -y --no-install-recommends $(TOOLCHAIN_PKGS)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP)

# Nothing to do when the tools are there; else install them as root, or through sudo when it needs no password.
toolchain:
	@if $(TOOLCHAIN_OK); then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "error: arm-none-eabi-gcc (with newlib) and qemu-system-arm are needed and apt-get is not available;"; \
		echo "install the equivalents of: $(TOOLCHAIN_PKGS)"; exit 1; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing the Cortex-M toolchain and QEMU: $(TOOLCHAIN_PKGS)"; \
		export DEBIAN_FRONTEND=noninteractive; $(APT_INSTALL) || exit 1; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		echo "installing the Cortex-M toolchain and QEMU with sudo: $(TOOLCHAIN_PKGS)"; \
		sudo -n env DEBIAN_FRONTEND=noninteractive sh -c '$(APT_INSTALL)' || exit 1; \
	else \
		echo "error: the Cortex-M toolchain or QEMU is missing and installing it needs root; run:"; \
		echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $(TOOLCHAIN_PKGS)"; \
		exit 1; \
	fi; \
	if ! { $(TOOLCHAIN_OK); }; then echo "error: $(TOOLCHAIN_PKGS) installed, but the tools are still missing"; exit 1; fi

demo: setup toolchain
	$(VENV)/bin/tvmq demo --models digits basicmotions --configs int8 w4a4-quantile

# pytest exits 5 when it collected no test: that must fail, never pass silently.
test: setup toolchain
	$(PY) -m pytest -q -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$status

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
