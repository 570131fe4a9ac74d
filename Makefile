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
LDLIBS   += $(shell $(PKG) --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)

CORE_SRC := $(wildcard core/*.c)
CPU_SRC  := $(wildcard backends/cpu/*.c)
CLI_SRC  := $(wildcard cli/*.c)
SRV_SRC  := $(wildcard server/*.c)

# per-file ISA flags: the kernels are chosen at run time by cpuid
$(BUILD)/backends/cpu/avx2.o:   XFLAGS = -mavx2 -mfma -mf16c
$(BUILD)/backends/cpu/avx512.o: XFLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16
$(BUILD)/backends/cpu/amx.o:    XFLAGS = -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mamx-tile -mamx-int8

BACKENDS := cpu
# backends/kops.c: the ops as launches of kernels/cl, shared by the opencl and hip backends
LIB_SRC  := $(CORE_SRC) $(CPU_SRC) backends/kops.c

# ---- OpenCL (built when the headers and the ICD loader are present) ----
HAVE_OPENCL ?= $(shell test -f /usr/include/CL/cl.h && test -f backends/opencl/opencl.c && $(PKG) --exists OpenCL 2>/dev/null && echo 1)
ifeq ($(HAVE_OPENCL),1)
  BACKENDS += opencl
  CFLAGS   += -DPORTA_HAVE_OPENCL -DCL_TARGET_OPENCL_VERSION=120
  LIB_SRC  += $(wildcard backends/opencl/*.c)
  LDLIBS   += -lOpenCL
  # CLBlast (dequantize + SGEMM) for prefill on GPUs, when the library is installed
  HAVE_CLBLAST ?= $(shell $(PKG) --exists clblast 2>/dev/null && test -f /usr/include/clblast_c.h && echo 1)
  ifeq ($(HAVE_CLBLAST),1)
    CFLAGS += -DPORTA_HAVE_CLBLAST
    LDLIBS += $(shell $(PKG) --libs clblast)
  endif
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

# ==== HIP backend (backends/hip) ========================================== begin HIP block ====
# AMD GPUs: kernels/cl compiled by hipcc through kernels/gpu_prelude.h into one code-object
# bundle per target of HIP_TARGETS (parallel under -j), embedded into the binary; the HIP
# runtime is loaded at run time, so the binary still starts (and falls back) without ROCm.
# `make cuda`: the same backend for NVIDIA GPUs in build-cuda/porta (nvcc through
# kernels/gpu_prelude.h; host code through backends/hip/hip_cuda.h; CUDA runtime linked
# statically). Device code depends only on the kernels, so every build shares $(HIP_DIR).
HIPCC        ?= $(shell command -v hipcc 2>/dev/null)
NVCC         ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
HIP_PATH     ?= $(patsubst %/bin/hipcc,%,$(HIPCC))
CUDA_HOME    ?= $(patsubst %/bin/nvcc,%,$(NVCC))
HIP_TARGETS  ?= gfx906 gfx908 gfx90a gfx1030
CUDA_TARGETS ?= sm_80 sm_90
HIP_API      ?= amd
HIP_DIR      ?= build-hip
# the kernels' compile-time shapes, given alike to the device compiler and to backends/hip
HIP_KDEFS    := -DMM_TR=64 -DMM_TT=32 -DMM_MR=4 -DMM_MT=4 -DMM_TOK_CONTIG=0 -DMT_TOK=4 -DMV_ROWS=1
HIP_UNIT     := $(filter-out %/prelude.h,$(filter %.h,$(KERNELS_CL))) $(filter %.cl,$(KERNELS_CL))
ifeq ($(HIP_API),cuda)
  HAVE_HIP   ?= $(shell test -n "$(NVCC)" && test -f "$(CUDA_HOME)/include/cuda_runtime_api.h" && test -f backends/hip/hip.c && echo 1)
else
  HAVE_HIP   ?= $(shell test -n "$(HIPCC)" && test -f "$(HIP_PATH)/include/hip/hip_runtime_api.h" && test -f backends/hip/hip.c && echo 1)
endif
ifeq ($(HAVE_HIP),1)
  BACKENDS += hip
  CFLAGS   += -DPORTA_HAVE_HIP
  LIB_OBJ  += $(patsubst %.c,$(BUILD)/%.o,$(wildcard backends/hip/*.c)) $(BUILD)/hip_images.o
  LDLIBS   += -ldl
  ifeq ($(HIP_API),cuda)
    HIP_XFLAGS := -DPORTA_HIP_ON_CUDA -I$(CUDA_HOME)/include
    HIP_IMAGES := $(HIP_DIR)/cuda.fatbin
    HIP_EXPECT := $(CUDA_TARGETS) $(patsubst sm_%,compute_%,$(lastword $(CUDA_TARGETS)))
    LDLIBS     += -L$(CUDA_HOME)/lib64 -lcudart_static -lstdc++ -lrt
  else
    HIP_XFLAGS := -D__HIP_PLATFORM_AMD__ -I$(HIP_PATH)/include
    HIP_IMAGES := $(patsubst %,$(HIP_DIR)/%.hsaco,$(HIP_TARGETS))
    HIP_EXPECT := $(HIP_TARGETS)
  endif
  $(BUILD)/backends/hip/%.o: XFLAGS = $(HIP_XFLAGS) $(HIP_KDEFS)
  # tests/test_hip.c checks the embedded code objects against the targets asked for
  $(BUILD)/tests/test_hip: private CFLAGS += -DPORTA_HIP_EXPECT='"$(HIP_EXPECT)"'
endif

# one translation unit: the prelude, the other kernels/cl headers, the .cl files (sorted)
$(HIP_DIR)/kernels.hip: kernels/gpu_prelude.h $(HIP_UNIT)
$(HIP_DIR)/kernels.cu: kernels/gpu_prelude.h $(HIP_UNIT)
$(HIP_DIR)/kernels.hip $(HIP_DIR)/kernels.cu:
	@mkdir -p $(dir $@)
	@{ cat $<; for f in $(HIP_UNIT); do printf '#line 1 "%s"\n' "$$f"; cat "$$f"; done; } > $@.tmp && mv $@.tmp $@
# always pass --offload-arch: without it hipcc silently builds for gfx803
$(HIP_DIR)/%.hsaco: $(HIP_DIR)/kernels.hip
	$(HIPCC) --genco --offload-arch=$* -O3 $(HIP_KDEFS) -x hip $< -o $@.tmp && mv $@.tmp $@
# cubins for CUDA_TARGETS plus PTX of the last one (JIT-compiled on newer GPUs)
$(HIP_DIR)/cuda.fatbin: $(HIP_DIR)/kernels.cu
	$(NVCC) -fatbin -O3 --threads 2 $(HIP_KDEFS) $(foreach t,$(CUDA_TARGETS),-gencode arch=compute_$(t:sm_%=%),code=$(t)) \
	  -gencode arch=compute_$(patsubst sm_%,%,$(lastword $(CUDA_TARGETS))),code=compute_$(patsubst sm_%,%,$(lastword $(CUDA_TARGETS))) \
	  -x cu $< -o $@.tmp && mv $@.tmp $@
# the embedded table is rebuilt when the list of images (HIP_TARGETS, HIP_API) changes
$(BUILD)/hip_images.list: hip-force
	@mkdir -p $(dir $@)
	@echo '$(HIP_API) $(HIP_IMAGES)' | cmp -s - $@ || echo '$(HIP_API) $(HIP_IMAGES)' > $@
$(BUILD)/hip_images.c: $(HIP_IMAGES) $(BUILD)/hip_images.list ci/embed_bin.sh
	sh ci/embed_bin.sh porta_hip_images $(HIP_IMAGES) > $@.tmp && mv $@.tmp $@
$(BUILD)/hip_images.o: $(BUILD)/hip_images.c
	$(CC) -c $< -o $@
# the registry (core/backend.c) is recompiled when HIP is switched on or off
$(BUILD)/hip.flags: hip-force
	@mkdir -p $(dir $@)
	@echo '$(HAVE_HIP) $(HIP_API)' | cmp -s - $@ || echo '$(HAVE_HIP) $(HIP_API)' > $@
$(BUILD)/core/backend.o: $(BUILD)/hip.flags

cuda:
	@test -n "$(NVCC)" || { echo "make cuda: nvcc not found (set NVCC=/path/to/nvcc)"; exit 1; }
	$(MAKE) BUILD=build-cuda HIP_API=cuda
cuda-test:
	@test -n "$(NVCC)" || { echo "make cuda-test: nvcc not found (set NVCC=/path/to/nvcc)"; exit 1; }
	$(MAKE) BUILD=build-cuda HIP_API=cuda test
clean: clean-hip
clean-hip:
	rm -rf build-cuda $(HIP_DIR)
.PHONY: cuda cuda-test clean-hip hip-force
# ==== end HIP block ==========================================================================

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
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

model:
	@sh ci/get-model.sh

clean:
	rm -rf build build-asan porta

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
