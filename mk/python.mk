# Python part: the cffi extension (bindings/python/admit/_admit*.so) built
# in-tree against $(O)/libadmit.a, its pytest suite and its benchmark.
# Always with $(PYTHON) (/usr/bin/python3, which has Debian's packages).

PY_DIR := bindings/python
PY_EXT_SUFFIX := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
PY_EXT := $(PY_DIR)/admit/_admit$(PY_EXT_SUFFIX)
PY_ENV := env PYTHONPATH=$(abspath $(PY_DIR)) PYTHONDONTWRITEBYTECODE=1 \
  ADMIT_LIB_DIR=$(abspath $(O))

CHECK_STEPS += check-python

.PHONY: python check-python bench-python

python: $(PY_EXT)

$(PY_EXT): $(O)/libadmit.a $(O)/libadmit.so $(HEADERS) $(PY_DIR)/admit_build.py \
  $(PY_DIR)/fastpath.c
	cd $(PY_DIR) && ADMIT_LIB_DIR=$(abspath $(O)) \
	  ADMIT_INCLUDE_DIR=$(abspath include) $(PYTHON) admit_build.py

# The suite runs with a throwaway redis-server (Redis tests skip without it).
check-python: python
	./test/run-redis.sh $(PY_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider \
	  test/python

bench-python: deps python
	./test/run-redis.sh $(PY_ENV) $(PYTHON) bench/bench_python.py

bench: bench-python
