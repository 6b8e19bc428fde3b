# Front door of the toolchain. Every target creates .venv on first use (tools/setup.sh).
# Run `make help` for the list.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ARCH    ?= default
BOARD   ?= icebreaker
SIM     ?=
DATA_DIR ?= data
BUILD   ?= build
export DATA_DIR

# the integer model: a freshly quantised one in build/ wins over the bundled one in archs/
QMODEL  ?= $(firstword $(wildcard $(BUILD)/$(ARCH)/quant/qmodel.npz) archs/$(ARCH)/qmodel.npz)
EPOCHS  ?=
OUT     := $(BUILD)/$(ARCH)-$(BOARD)
IMAGES  ?= 100
OBJECTIVE ?= latency
HEADROOM ?=
MIN_UTIL ?=
UNROUTABLE ?=
DATASET ?=
BUDGET  ?=
NAME    ?= searched
QUICK   ?=

.PHONY: help setup test test-slow demo data search train quant map board-config rtl sim bitstream flash bench clean

help: ## list the targets
	@echo "Targets (variables: ARCH=$(ARCH) BOARD=$(BOARD) SIM=$(SIM) DATA_DIR=$(DATA_DIR)):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt tools/setup.sh
	@bash tools/setup.sh

setup: $(STAMP) ## create .venv and install every pinned dependency (once)

test: $(STAMP) data ## run the test suite (SIM=icarus|verilator to pick one simulator)
	$(PY) -m pytest -n 2 -m "not slow"

test-slow: $(STAMP) data ## run the slow tests too (all bitstream builds)
	$(PY) -m pytest -n 2

data: $(STAMP) ## fetch MNIST + Fashion-MNIST into DATA_DIR (no-op when present)
	$(PY) -m sw.datasets fetch --dir $(DATA_DIR)

train: $(STAMP) data ## train archs/ARCH/arch.json (EPOCHS= DATASET= SEED=; resumes) -> build/ARCH/train/
	$(PY) -m sw.train --arch archs/$(ARCH)/arch.json --out $(BUILD)/$(ARCH)/train --resume \
		$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(DATASET),--dataset $(DATASET)) $(if $(SEED),--seed $(SEED))

quant: $(STAMP) data ## quantise the trained ARCH into its integer model -> build/ARCH/quant/qmodel.npz
	$(PY) -m sw.quant --arch archs/$(ARCH)/arch.json --checkpoint $(BUILD)/$(ARCH)/train/checkpoint.pt \
		--out $(BUILD)/$(ARCH)/quant

search: $(STAMP) data ## hardware-aware NAS (DATASET= BOARD= BUDGET= NAME= QUICK=1) -> archs/NAME/arch.json
	$(PY) -m sw.search --dataset $(or $(DATASET),fashion-mnist) --board $(BOARD) \
		$(if $(BUDGET),--budget $(BUDGET)) --name $(NAME) $(if $(QUICK),--quick)

map: $(STAMP) ## size the accelerator for ARCH on BOARD (OBJECTIVE=latency|energy|edp HEADROOM= MIN_UTIL=0.7 UNROUTABLE=1) -> build/ARCH-BOARD/
	$(PY) -m sw.mapper --qmodel $(QMODEL) --board $(BOARD) --objective $(OBJECTIVE) --out $(OUT) \
		$(if $(HEADROOM),--headroom $(HEADROOM)) $(if $(MIN_UTIL),--min-util $(MIN_UTIL)) \
		$(if $(UNROUTABLE),--unroutable)

rtl: map ## generate the accelerator's Verilog -> build/ARCH-BOARD/accel.v
	$(PY) -m hw.generate --accel $(OUT)/accel.json --out $(OUT)

sim: map data ## run IMAGES (100) test images of ARCH on the RTL (Verilator), bit-exact vs golden
	$(PY) -m sim.network --qmodel $(QMODEL) --accel $(OUT)/accel.json --images $(IMAGES)

# the board flow's accel.json: the mapper's; on the iCEBreaker the small organisation
# (the mapper's when it chooses it, else sw.mapper.small_config with LANES=CLP,SLP,ALP, 4,6,4)
BOARD_CONFIG := $(if $(filter icebreaker,$(BOARD)),board-config,map)

board-config: $(STAMP) ## the small organisation's accel.json for BOARD=icebreaker (LANES=4,6,4) -> build/ARCH-BOARD/
	$(PY) -m boards.config --qmodel $(QMODEL) --board $(BOARD) --out $(OUT) --objective $(OBJECTIVE) \
		$(if $(LANES),--lanes $(LANES))

bitstream: $(BOARD_CONFIG) ## build the accelerator's board top for BOARD (MHZ= BAUD=; fails on timing) -> build/ARCH-BOARD/top.bin|bit + top.report.json
	$(PY) -m boards.build --accel $(OUT)/accel.json --board $(BOARD) --out $(OUT) --qmodel $(QMODEL) \
		$(if $(MHZ),--mhz $(MHZ)) $(if $(BAUD),--baud $(BAUD))

flash: ## program BOARD with the bitstream of `make bitstream` (iceprog / openFPGALoader)
	$(PY) -m boards.flash --board $(BOARD) --bitstream $(OUT)/top.$(if $(filter icebreaker,$(BOARD)),bin,bit)

demo: rtl sim bitstream ## the main job on the bundled default network: rtl + sim + bitstream

bench: $(STAMP) ## print the figures: accuracy table, NASA comparison (hybrid vs mul-only), accelerator
	-$(PY) bench/accuracy.py
	-$(PY) bench/nasa.py
	-$(PY) bench/accel.py --no-build
	-$(PY) bench/accel.py --small 4,6,4 --boards icebreaker --images 3

clean: ## remove generated files (build/); keeps .venv and data
	rm -rf $(BUILD) sim_build
