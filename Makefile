# admit: plain Makefile. `make` builds libadmit.a, libadmit.so and admit.pc.
#
# Variables users may set: CC, CFLAGS (added to ours), LDFLAGS, PREFIX,
# DESTDIR, LIBDIR, INCLUDEDIR, PYTHON. Build outputs go under $(O).

PYTHON ?= /usr/bin/python3
CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
O ?= build/release

VERSION_H := include/admit/common.h
version_part = $(shell sed -n 's/^\#define ADMIT_VERSION_$(1) \([0-9]*\)$$/\1/p' $(VERSION_H))
ADMIT_MAJOR := $(call version_part,MAJOR)
ADMIT_MINOR := $(call version_part,MINOR)
ADMIT_PATCH := $(call version_part,PATCH)
ADMIT_VERSION := $(ADMIT_MAJOR).$(ADMIT_MINOR).$(ADMIT_PATCH)
# The soname follows the ABI, which is the major version.
ADMIT_ABI := $(ADMIT_MAJOR)

# Sanitizer flags of a variant build (see the check-asan and check-tsan rules).
SANFLAGS ?=
OPT ?= -O2
ADMIT_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) -g -fPIC -pthread \
  -fvisibility=hidden -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
  -Wmissing-prototypes -Iinclude -Ilib -I$(O)/gen $(SANFLAGS)
ALL_CFLAGS = $(ADMIT_CFLAGS) $(CFLAGS)
LIBS := -lhiredis -luv -lpthread -lm

LIB_SRCS := $(sort $(wildcard lib/*.c))
# Parts may generate sources into $(O)/gen (e.g. embedded Lua scripts).
GEN_SRCS :=
LIB_OBJS = $(LIB_SRCS:lib/%.c=$(O)/obj/%.o) $(GEN_SRCS:$(O)/gen/%.c=$(O)/obj/gen/%.o)
HEADERS := include/admit.h $(wildcard include/admit/*.h) $(wildcard lib/*.h)

TEST_SRCS := $(sort $(wildcard test/test-*.c))
TEST_BINS := $(TEST_SRCS:test/%.c=$(O)/test/%)
BENCH_SRCS := $(sort $(wildcard bench/bench-*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(O)/bench/%)

# Every step `make check` runs, in order; parts append to CHECK_STEPS in
# their mk/*.mk fragment.
CHECK_STEPS := check-c check-asan check-tsan check-valgrind check-fuzz \
  check-abi check-doc

.PHONY: FORCE all lib deps check check-c check-asan check-tsan check-valgrind \
  check-fuzz check-abi check-doc bench fuzz doc install uninstall clean \
  tests benches examples python demo

all: lib $(O)/admit.pc

lib: $(O)/libadmit.a $(O)/libadmit.so

include $(sort $(wildcard mk/*.mk))

$(O)/obj/%.o: lib/%.c $(HEADERS) | $(GEN_SRCS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(O)/obj/gen/%.o: $(O)/gen/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(O)/libadmit.a: $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(O)/libadmit.so.$(ADMIT_VERSION): $(LIB_OBJS)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libadmit.so.$(ADMIT_ABI) \
	  -o $@ $^ $(LDFLAGS) $(LIBS)

$(O)/libadmit.so: $(O)/libadmit.so.$(ADMIT_VERSION)
	ln -sf libadmit.so.$(ADMIT_VERSION) $(O)/libadmit.so.$(ADMIT_ABI)
	ln -sf libadmit.so.$(ADMIT_VERSION) $@

# Regenerated on every run (kept only if it changed), so a later
# `make install PREFIX=...` never installs a stale prefix.
$(O)/admit.pc: admit.pc.in $(VERSION_H) FORCE
	@mkdir -p $(dir $@)
	@sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	  -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(ADMIT_VERSION)|' \
	  $< > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

FORCE:

# Tests and benchmarks link the static library so they need no install.
$(O)/test/%: test/%.c test/helpers.h $(O)/libadmit.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $< $(O)/libadmit.a \
	  $(LDFLAGS) -lcmocka $(LIBS)

$(O)/bench/%: bench/%.c bench/bench.h $(O)/libadmit.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $< $(O)/libadmit.a \
	  $(LDFLAGS) $(LIBS)

tests: $(TEST_BINS)
benches: $(BENCH_BINS)

# Each examples/*.c and examples/c/*.c is one small, complete program.
EXAMPLE_SRCS := $(sort $(wildcard examples/*.c examples/c/*.c))
EXAMPLE_BINS := $(patsubst examples/%.c,$(O)/examples/%,$(EXAMPLE_SRCS))

$(O)/examples/%: examples/%.c $(O)/libadmit.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -o $@ $< $(O)/libadmit.a \
	  $(LDFLAGS) $(LIBS)

examples: $(EXAMPLE_BINS)

# --- dependencies ----------------------------------------------------------

deps:
	@./tools/deps.sh

# --- checks ----------------------------------------------------------------

check: deps
	@set -e; for step in $(CHECK_STEPS); do \
	  echo "=== $$step"; $(MAKE) --no-print-directory $$step; done; \
	echo "=== make check: all steps passed"

check-c: tests
	./test/run-tests.sh $(O) $(TEST_BINS)

check-asan:
	$(MAKE) --no-print-directory O=build/asan OPT=-O1 \
	  SANFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ADMIT_TEST_SCALE=short ./test/run-tests.sh build/asan \
	  $(TEST_SRCS:test/%.c=build/asan/test/%)

check-tsan:
	$(MAKE) --no-print-directory O=build/tsan OPT=-O1 \
	  SANFLAGS="-fsanitize=thread -fno-omit-frame-pointer" tests
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	ADMIT_TEST_SCALE=short ./test/run-tests.sh build/tsan \
	  $(TEST_SRCS:test/%.c=build/tsan/test/%)

check-valgrind: tests
	ADMIT_TEST_SCALE=short ADMIT_TEST_WRAP="valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect" \
	  ./test/run-tests.sh $(O) $(TEST_BINS)

check-abi: lib
	./test/check-abi.sh $(O)

check-doc: doc

# --- fuzzing (clang libFuzzer) ---------------------------------------------

FUZZ_SRCS := $(sort $(wildcard test/fuzz-*.c))
FUZZ_BINS := $(FUZZ_SRCS:test/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 20

build/fuzz/%: test/%.c $(LIB_SRCS) $(HEADERS)
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Ilib \
	  -fsanitize=fuzzer,address,undefined -o $@ $< $(LIB_SRCS) $(LIBS)

check-fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
	  echo "fuzz $$f for 10 s"; mkdir -p build/fuzz/corpus-$${f##*/}; \
	  $$f -max_total_time=10 -max_len=256 -artifact_prefix=build/fuzz/ \
	    build/fuzz/corpus-$${f##*/} test/corpus/$${f##*/fuzz-} \
	    > build/fuzz/$${f##*/}.log 2>&1 \
	    || { tail -40 build/fuzz/$${f##*/}.log; exit 1; }; \
	  tail -1 build/fuzz/$${f##*/}.log; done

fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
	  mkdir -p build/fuzz/corpus-$${f##*/}; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=256 \
	    -artifact_prefix=build/fuzz/ build/fuzz/corpus-$${f##*/} test/corpus/$${f##*/fuzz-}; done

# --- benchmarks ------------------------------------------------------------

bench: deps benches
	@set -e; for b in $(BENCH_BINS); do echo "=== $$b"; $$b; done

# --- documentation ---------------------------------------------------------

doc: $(HEADERS) doc/Doxyfile $(wildcard doc/*.md) README.md
	@mkdir -p build/doc
	doxygen doc/Doxyfile > build/doc/doxygen.log 2> build/doc/warnings.log \
	  || { cat build/doc/warnings.log; exit 1; }
	@if [ -s build/doc/warnings.log ]; then \
	  echo "doxygen warnings:"; cat build/doc/warnings.log; exit 1; fi
	@echo "doc: build/doc/html/index.html (no warnings)"

# --- install ---------------------------------------------------------------

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/admit \
	  $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/admit.h $(DESTDIR)$(INCLUDEDIR)/admit.h
	install -m 644 include/admit/*.h $(DESTDIR)$(INCLUDEDIR)/admit/
	install -m 644 $(O)/libadmit.a $(DESTDIR)$(LIBDIR)/libadmit.a
	install -m 755 $(O)/libadmit.so.$(ADMIT_VERSION) \
	  $(DESTDIR)$(LIBDIR)/libadmit.so.$(ADMIT_VERSION)
	ln -sf libadmit.so.$(ADMIT_VERSION) $(DESTDIR)$(LIBDIR)/libadmit.so.$(ADMIT_ABI)
	ln -sf libadmit.so.$(ADMIT_VERSION) $(DESTDIR)$(LIBDIR)/libadmit.so
	install -m 644 $(O)/admit.pc $(DESTDIR)$(PKGCONFIGDIR)/admit.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/admit.h $(DESTDIR)$(LIBDIR)/libadmit.a \
	  $(DESTDIR)$(LIBDIR)/libadmit.so $(DESTDIR)$(LIBDIR)/libadmit.so.$(ADMIT_ABI) \
	  $(DESTDIR)$(LIBDIR)/libadmit.so.$(ADMIT_VERSION) \
	  $(DESTDIR)$(PKGCONFIGDIR)/admit.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/admit

clean:
	rm -rf build
