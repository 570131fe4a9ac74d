# porta - portable LLM inference engine. `make` builds ./porta and build/libporta.a;
# `make test` runs every suite; `make asan` runs them under ASan+UBSan.
BUILD    ?= build
CC       ?= cc
OPT      ?= -O2
SAN      ?=
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -pthread -I. -Icore $(SAN)
LDFLAGS  += -pthread $(SAN)
LDLIBS   += -lm
PKG      := pkg-config

# ---- required libraries ----
LDLIBS   += $(shell $(PKG) --libs libconfig 2>/dev/null || echo -lconfig)
LDLIBS   += $(shell $(PKG) --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
LDLIBS   += $(shell $(PKG) --libs libcjson 2>/dev/null || echo -lcjson)

CORE_SRC := $(wildcard core/*.c)
CPU_SRC  := $(wildcard backends/cpu/*.c)
CLI_SRC  := $(wildcard cli/*.c)
SRV_SRC  := $(wildcard server/*.c)

# per-file ISA flags: the kernels are chosen at run time by cpuid
$(BUILD)/backends/cpu/avx2.o:   XFLAGS = -mavx2 -mfma -mf16c
$(BUILD)/backends/cpu/avx512.o: XFLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16

BACKENDS := cpu
LIB_SRC  := $(CORE_SRC) $(CPU_SRC)

# ---- OpenCL (built when the headers and the ICD loader are present) ----
HAVE_OPENCL ?= $(shell test -f /usr/include/CL/cl.h && test -f backends/opencl/opencl.c && $(PKG) --exists OpenCL 2>/dev/null && echo 1)
ifeq ($(HAVE_OPENCL),1)
  BACKENDS += opencl
  CFLAGS   += -DPORTA_HAVE_OPENCL -DCL_TARGET_OPENCL_VERSION=120
  LIB_SRC  += $(wildcard backends/opencl/*.c)
  LDLIBS   += -lOpenCL
endif

KERNELS_CL := $(sort $(wildcard kernels/cl/*.cl) $(wildcard kernels/cl/*.h))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o) $(SRV_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libporta.a
BIN      := $(if $(filter build,$(BUILD)),porta,$(BUILD)/porta)

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_SH  := $(wildcard tests/test_*.sh)
TEST_LIBS := $(shell $(PKG) --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

.PHONY: all test asan clean model backends
all: $(BIN) $(LIB)
	@echo "porta: built backends: $(BACKENDS)"

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(XFLAGS) -MMD -MP -c $< -o $@

# kernels/cl sources embedded as C strings (never read from the working directory at run time)
$(BUILD)/kernels_cl.c: $(KERNELS_CL) ci/embed.sh
	@mkdir -p $(dir $@)
	sh ci/embed.sh $(KERNELS_CL) > $@
$(BUILD)/kernels_cl.o: $(BUILD)/kernels_cl.c
	$(CC) $(CFLAGS) -c $< -o $@
ifeq ($(HAVE_OPENCL),1)
  LIB_OBJ += $(BUILD)/kernels_cl.o
endif

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(LIB) $(TEST_LIBS) $(LDLIBS) $(LDFLAGS)

# PORTA_SHARED: the reference data folder (../shared/data beside the checkout by default)
PORTA_SHARED ?= $(abspath ../shared/data)
export PORTA_SHARED

test: all $(TEST_BIN) model
	@PORTA_BIN=$(abspath $(BIN)) sh tests/run_all.sh $(TEST_BIN) $(TEST_SH)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

model:
	@sh ci/get-model.sh

clean:
	rm -rf build build-asan porta

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
