# mirage — top-level build. `make` builds build/mirage, `make test` runs the whole suite,
# `make demo` runs the main job. Optional parts are detected and reported; a missing one
# switches its feature off, never the build.
#
#   make SAN=1 test     build into build-san/ with AddressSanitizer + UBSan and run the tests
#   make OPENBLAS=0     force the built-in GEMM, OPENMP=0 single-threaded, FFMPEG=0, SDL2=0, PNG=0, CUDA=0
#   make test-gpu       build and run tests/gpu/test_* (CUDA ops, frame steps and training vs the CPU; needs a GPU)

CC      ?= cc
SAN     ?= 0
BUILD   ?= $(if $(filter 1,$(SAN)),build-san,build)
OPT     ?= -O3 -march=x86-64-v3 -mtune=native
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Iinclude -Isrc $(OPT) -g
LDLIBS  += -lm -lpthread

ifeq ($(SAN),1)
  OPT     = -O1 -march=x86-64-v3
  CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif

# ---- feature detection (each prints what it found) -------------------------------------
PKG := $(shell command -v pkg-config 2>/dev/null)
have_pkg = $(if $(PKG),$(shell pkg-config --exists $(1) 2>/dev/null && echo yes),)

# cJSON is required (safetensors headers, --json output).
ifneq ($(call have_pkg,libcjson),yes)
  $(error cJSON not found: apt-get install libcjson-dev (or run scripts/setup.sh))
endif
CFLAGS += $(shell pkg-config --cflags libcjson)
LDLIBS += $(shell pkg-config --libs libcjson)

OPENMP ?= $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1 || echo 0)
ifeq ($(OPENMP),1)
  CFLAGS += -fopenmp -DMG_HAVE_OPENMP
  LDFLAGS += -fopenmp
  FEATURES += openmp
endif

OPENBLAS ?= $(if $(call have_pkg,openblas),1,0)
ifeq ($(OPENBLAS),1)
  CFLAGS += -DMG_HAVE_OPENBLAS $(shell pkg-config --cflags openblas)
  LDLIBS += $(shell pkg-config --libs openblas)
  FEATURES += openblas
endif

FFMPEG ?= $(if $(call have_pkg,libavformat libavcodec libswscale libavutil),1,0)
ifeq ($(FFMPEG),1)
  CFLAGS += -DMG_HAVE_FFMPEG $(shell pkg-config --cflags libavformat libavcodec libswscale libavutil)
  LDLIBS += $(shell pkg-config --libs libavformat libavcodec libswscale libavutil)
  FEATURES += ffmpeg
endif

# libavdevice (part of FFmpeg) brings the V4L2 camera input (--input v4l2:/dev/video0).
AVDEVICE ?= $(if $(filter 1,$(FFMPEG)),$(if $(call have_pkg,libavdevice),1,0),0)
ifeq ($(AVDEVICE),1)
  CFLAGS += -DMG_HAVE_AVDEVICE $(shell pkg-config --cflags libavdevice)
  LDLIBS += $(shell pkg-config --libs libavdevice)
  FEATURES += avdevice
endif

# SDL2 brings the preview window (--output window).
SDL2 ?= $(if $(call have_pkg,sdl2),1,0)
ifeq ($(SDL2),1)
  CFLAGS += -DMG_HAVE_SDL2 $(shell pkg-config --cflags sdl2)
  LDLIBS += $(shell pkg-config --libs sdl2)
  FEATURES += sdl2
endif

NVCC ?= $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
# ASan and the CUDA runtime do not mix: a sanitizer build is a CPU build.
ifeq ($(SAN),1)
  override CUDA := 0
endif
CUDA ?= $(if $(NVCC),1,0)
# The CUDA backend (src/cuda/*.cu): built for Hopper, linked with cuBLASLt and the static CUDA
# runtime (rpath to the toolkit's lib64), so a CUDA build starts on a machine without a GPU
# and runs on the CPU there; --device cuda then says "no CUDA device found".
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
NVCC_ARCH ?= -gencode=arch=compute_90a,code=sm_90a
NVFLAGS ?= -std=c++17 -O3 $(NVCC_ARCH) -lineinfo -Xcompiler -Wall,-Wno-unused-function
ifeq ($(CUDA),1)
  CFLAGS += -DMG_HAVE_CUDA -I$(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcublasLt -lcudart_static -ldl -lrt -lstdc++
  FEATURES += cuda
endif

# NCCL (issue 8: mirage train --gpus N): compiled against nccl.h when the toolkit has it, loaded
# at run time with dlopen (src/cuda/nccl.cu), so no build or machine needs it for anything else.
NCCL ?= $(if $(filter 1,$(CUDA)),$(if $(wildcard $(CUDA_HOME)/include/nccl.h),1,0),0)
ifeq ($(NCCL),1)
  NVFLAGS += -DMG_HAVE_NCCL
  FEATURES += nccl
endif

# libpng compresses the evaluation report's frame strips; without it they are written by a
# built-in writer as uncompressed PNG (bigger files, same pictures).
PNG ?= $(if $(call have_pkg,libpng),1,0)
ifeq ($(PNG),1)
  CFLAGS += -DMG_HAVE_PNG $(shell pkg-config --cflags libpng)
  LDLIBS += $(shell pkg-config --libs libpng)
  FEATURES += png
endif

# libjpeg-turbo: training shards store frames as JPEG (mirage data build, the trainer's reader).
JPEG ?= $(if $(call have_pkg,libturbojpeg),1,0)
ifeq ($(JPEG),1)
  CFLAGS += -DMG_HAVE_JPEG $(shell pkg-config --cflags libturbojpeg)
  LDLIBS += $(shell pkg-config --libs libturbojpeg)
  FEATURES += jpeg
endif

# libwebsockets brings `mirage serve` (HTTP + WebSocket).
LWS ?= $(if $(call have_pkg,libwebsockets),1,0)
ifeq ($(LWS),1)
  CFLAGS += -DMG_HAVE_LWS $(shell pkg-config --cflags libwebsockets)
  LDLIBS += $(shell pkg-config --libs libwebsockets)
  FEATURES += lws
endif

CMOCKA ?= $(if $(call have_pkg,cmocka),1,0)

FEATURES_STR := $(strip $(FEATURES))
CFLAGS += -DMG_FEATURES='"$(FEATURES_STR)"'

# ---- sources ---------------------------------------------------------------------------
LIB_SRC := $(wildcard src/core/*.c src/model/*.c src/ops/cpu/*.c src/io/*.c src/train/*.c src/eval/*.c src/data/*.c src/serve/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CU_SRC := $(if $(filter 1,$(CUDA)),$(wildcard src/cuda/*.cu),)
CU_OBJ := $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
GPU_TEST := $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(wildcard tests/gpu/test_*.c))
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
LIB := $(BUILD)/libmirage.a

.PHONY: all test demo clean features check-features
all: features $(BUILD)/mirage

features:
	@echo "mirage build: openmp=$(OPENMP) openblas=$(OPENBLAS) ffmpeg=$(FFMPEG) avdevice=$(AVDEVICE) sdl2=$(SDL2) png=$(PNG) jpeg=$(JPEG) lws=$(LWS) cuda=$(CUDA)$(if $(NVCC), ($(NVCC)),) nccl=$(NCCL) cmocka=$(CMOCKA) san=$(SAN) -> $(BUILD)/"
	@if [ "$(CUDA)" = 1 ]; then echo "mirage build: cuda: $(NVCC_ARCH), cuBLASLt + static cudart from $(CUDA_HOME)/lib64; make test-gpu and make lab run on a GPU machine"; fi
	@if [ "$(SAN)" = 1 ]; then echo "mirage build: note: SAN=1 builds without CUDA (ASan and the CUDA runtime do not mix)"; fi

$(BUILD)/obj/%.o: %.c $(wildcard include/*.h src/*/*.h src/*/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -Iinclude -Isrc -c $< -o $@

$(LIB): $(LIB_OBJ) $(CU_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/mirage: $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Tests: one binary per tests/test_*.c, linked with cmocka and the library.
$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka

# (before the rule: make expands a rule's prerequisites where it reads them)
LOADGEN := $(if $(filter 11,$(LWS)$(JPEG)),$(BUILD)/loadgen,)
test: features $(BUILD)/mirage $(TEST_BIN) $(LOADGEN)
	@if [ "$(CMOCKA)" != 1 ]; then echo "mirage: error: make test needs cmocka (apt-get install libcmocka-dev)"; exit 1; fi
	@MIRAGE=$(BUILD)/mirage BUILD=$(BUILD) sh tests/run_all.sh $(TEST_BIN)

# The main job: the shipped model (models/mirage-tiny.safetensors) on a real clip it never saw
# in training (Megamind.avi from Debian's opencv-doc, installed here when missing) -> demo.mp4.
demo: $(BUILD)/mirage
	@dpkg -s opencv-doc >/dev/null 2>&1 || { \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		echo "make demo: installing opencv-doc (its examples hold the real clip the demo runs on, ~96 MB)"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			opencv-doc >/dev/null || echo "make demo: could not install opencv-doc: the demo runs on the built-in test scene"; }
	$(BUILD)/mirage demo

# The serving load generator (dev/serve/loadgen.c, docs/SERVE.md): a libwebsockets client, so it
# runs where node does not (the GPU machines). Built with libwebsockets and libjpeg-turbo.
$(BUILD)/loadgen: dev/serve/loadgen.c $(LIB)
	@if [ "$(LWS)$(JPEG)" != 11 ]; then echo "mirage: error: loadgen needs libwebsockets and libjpeg-turbo (lws=$(LWS) jpeg=$(JPEG))"; exit 1; fi
	$(CC) $(CFLAGS) $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS)

# The CUDA ops against their CPU twins and whole frame steps against the CPU stream; needs a GPU.
$(BUILD)/tests/gpu/%: tests/gpu/%.c $(wildcard tests/*.h tests/gpu/*.h) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< -o $@ $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka

# The kernel lab (dev/cuda/*.cu): each program checks its kernels against the CPU and times
# them against the card's measured peaks; dev/cuda/run.sh runs it on a GPU machine.
LAB_BIN := $(patsubst dev/cuda/%.cu,$(BUILD)/dev/%,$(wildcard dev/cuda/*.cu))
$(BUILD)/dev/%: dev/cuda/%.cu dev/cuda/lab.h $(LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -Iinclude -Isrc -c $< -o $@.o
	$(CC) $(LDFLAGS) $@.o -o $@ $(LIB) $(LDLIBS)

.PHONY: lab
lab: features
	@if [ "$(CUDA)" != 1 ]; then echo "mirage: error: make lab needs a CUDA build (nvcc found, SAN=0)"; exit 1; fi
	@$(MAKE) --no-print-directory $(LAB_BIN)

.PHONY: test-gpu
test-gpu: features
	@if [ "$(CUDA)" != 1 ]; then echo "mirage: error: make test-gpu needs a CUDA build (nvcc found, SAN=0)"; exit 1; fi
	@$(MAKE) --no-print-directory $(BUILD)/mirage $(GPU_TEST)
	@for t in $(GPU_TEST); do echo "== $$t"; $$t || exit 1; done

clean:
	rm -rf build build-san build-gpu build-fuzz

# ---- fuzzing: make fuzz [FUZZERS="proto web"] [FUZZ_SECONDS=60] -----------------------------
# One libFuzzer target per parser (fuzz/fuzz_NAME.c, fuzz/README.md). They link the library and
# the command line's parse steps built by clang with ASan + UBSan and libFuzzer's coverage into
# build-fuzz/ (CUDA and OpenMP off), by a second make with FUZZ_INSTR=1. Seeds are fuzz/corpus/NAME/,
# new inputs go to build-fuzz/corpus/NAME/, a crash to build-fuzz/artifacts/NAME/ (make fuzz
# fails and names it). Every seed and every fixed crash (fuzz/regress/NAME/) also runs through the
# same entry points in `make test` (tests/test_fuzz_regress.c). scripts/fuzz_report.sh measures.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_DIR := build-fuzz
FUZZERS ?= safetensors y4m shard proto web ckpt model cli
FUZZ_RUN_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -close_fd_mask=3
CLI_PARSE_OBJ := $(filter-out $(BUILD)/obj/src/cli/main.o,$(CLI_OBJ))
ifeq ($(FUZZ_INSTR),1)
  CFLAGS += -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  LDFLAGS += -fsanitize=address,undefined
endif
$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c $(CLI_PARSE_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $< -o $@ $(CLI_PARSE_OBJ) $(LIB) $(LDFLAGS) $(LDLIBS)

# the regression run: the fuzz targets' entry points under this build's compiler (ASan with SAN=1)
$(BUILD)/tests/test_fuzz_regress: tests/test_fuzz_regress.c tests/testutil.h $(wildcard fuzz/fuzz_*.c) \
		$(CLI_PARSE_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< -o $@ $(CLI_PARSE_OBJ) $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka

.PHONY: fuzz fuzz-build $(FUZZERS:%=fuzz-run-%)
fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "mirage: error: make fuzz needs clang (apt-get install clang, or scripts/setup.sh)"; exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=$(FUZZ_CC) CUDA=0 OPENMP=0 SAN=0 FUZZ_INSTR=1 \
		OPT="-O1 -march=x86-64-v3" $(FUZZERS:%=$(FUZZ_DIR)/fuzz/fuzz_%)

# each fuzzer is its own target, so `make -jN fuzz` runs N at a time; a fuzzer's output goes to
# $(FUZZ_DIR)/fuzz_NAME.log and its final statistics to the terminal
fuzz: fuzz-build
	@$(MAKE) --no-print-directory $(FUZZERS:%=fuzz-run-%)

$(FUZZERS:%=fuzz-run-%): fuzz-run-%:
	@mkdir -p $(FUZZ_DIR)/corpus/$* $(FUZZ_DIR)/artifacts/$*
	@dict=""; [ -f fuzz/$*.dict ] && dict="-dict=fuzz/$*.dict"; \
	echo "== fuzz_$* for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/fuzz_$*.log)"; \
	if $(FUZZ_DIR)/fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_RUN_FLAGS) $$dict \
		-artifact_prefix=$(FUZZ_DIR)/artifacts/$*/ $(FUZZ_DIR)/corpus/$* fuzz/corpus/$* >$(FUZZ_DIR)/fuzz_$*.log 2>&1; then \
		grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done ' $(FUZZ_DIR)/fuzz_$*.log | sed 's/^/   fuzz_$*: /'; \
	else \
		tail -n 40 $(FUZZ_DIR)/fuzz_$*.log; \
		echo "mirage: error: fuzz_$* failed; the input that did it: $$(ls $(FUZZ_DIR)/artifacts/$*/* 2>/dev/null | tr '\n' ' ')"; \
		echo "(reproduce: $(FUZZ_DIR)/fuzz/fuzz_$* FILE; once fixed, add FILE to fuzz/regress/$*/)"; exit 1; \
	fi

# ---- training data: make data (issue 5; docs/DATA.md) ------------------------------------
# Installs the Debian packages with free real material (opencv-doc: 3 videos and photos;
# python3-skimage: photos; mate-backgrounds: nature photos) and builds data/ with
# `mirage data build`: JPEG shards, split by source file, about 30 MiB so they travel to the
# GPU machines. Drawings, charts, logos, calibration chessboards, text and a deliberately
# damaged video are left out by name (DATA_EXCLUDE). Gzipped photos are unpacked first. Seed 41
# holds out Megamind.avi (4 shots) and 6 photos (no stereo pair split) for validation.
DATA_PKGS ?= opencv-doc python3-skimage mate-backgrounds
DATA_SRC ?= /usr/share/doc/opencv-doc/examples/data /usr/lib/python3/dist-packages/skimage/data \
	/usr/share/backgrounds/mate/nature
DATA_EXCLUDE ?= Megamind_bugy.avi Blender_Suzanne* HappyFish.jpg *Logo* *logo* blox.jpg ellipses.jpg \
	left[0-9]* right[0-9]* left.jpg right.jpg pca_test1.jpg text_*.jpg ela_modified.jpg aloeGT.png cards.png \
	chessboard* detect_blob.png digits.png gradient.png imageText* mask.png ml.png notes.png pic[0-9].png \
	sudoku.png templ.png tmpl.png block.png bw_text.png checker_bilevel.png clock_motion.png color.png \
	foo3x5x4indexed.png green_palette.png horse.png microaneurysms.png palette_* phantom.png text.png \
	page.png _blobs* multipage* truncated.jpg
DATA_ARGS ?= --max-frames 1000 --seed 41
.PHONY: data
data: $(BUILD)/mirage
	@missing=""; for p in $(DATA_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		echo "make data: installing$$missing"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null || { echo "mirage: error: make data: apt-get failed"; exit 1; }; \
	fi
	@rm -rf $(BUILD)/data-gz && mkdir -p $(BUILD)/data-gz && \
	for f in $$(find $(DATA_SRC) -name '*.jpg.gz' -o -name '*.png.gz' 2>/dev/null); do \
		gunzip -c "$$f" > $(BUILD)/data-gz/$$(basename "$$f" .gz) || exit 1; done
	$(BUILD)/mirage data build --out data $(DATA_ARGS) $(foreach p,$(DATA_EXCLUDE),--exclude '$(p)') $(DATA_SRC) $(BUILD)/data-gz
	$(BUILD)/mirage data info data
	@du -sh data
