# SPDX-License-Identifier: MIT
# User-facing commands. The build itself is CMake's (CMakeLists.txt).
#   make demo          build and run the tour of the tutorial's lessons
#   make test          install test dependencies, build, run every suite
#                      plain, under ASan+UBSan and under TSan
#   make bench         run the benchmarks (QUICK=1 for a short run)
#   make soak          the randomized fault-injection soak, about 5 minutes
#                      (SEED=n replays a run, KILLS=n or DURATION=secs sets its length)
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build demo test bench soak clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@./$(BUILD)/examples/tour

test:
	@tests/all.sh

bench: build
	@./$(BUILD)/bench/weft_bench $(if $(QUICK),--quick)

soak: build
	@./$(BUILD)/tests/weft_soak $(if $(SEED),--seed=$(SEED)) $(if $(KILLS),--kills=$(KILLS)) \
	  $(if $(DURATION),--duration=$(DURATION))

clean:
	rm -rf build build-asan build-tsan build*.log
