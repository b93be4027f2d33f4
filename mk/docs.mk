# Docs part: the worked examples in doc/*.md stay true.
#
# Every examples/<name>.c that has an expected output doc/out/<name>.txt is
# run and its output compared with that file, which the guides include
# verbatim; examples named redis* run with ADMIT_REDIS_URL pointing at a
# throwaway server (test/run-redis.sh; skipped without redis-server).
# Every doc/py/<name>.py is run the same way against doc/out/py-<name>.txt
# (with the Python extension built in-tree).
# `make doc-outputs` rewrites the expected outputs from the programs; read
# the diff before committing it, since the guides' prose quotes the numbers.

DOC_C_OUTS := $(filter-out doc/out/py-%,$(sort $(wildcard doc/out/*.txt)))
DOC_C_NAMES := $(patsubst doc/out/%.txt,%,$(DOC_C_OUTS))
DOC_PY_SRCS := $(sort $(wildcard doc/py/*.py))
DOC_PY_ENV := env PYTHONPATH=$(abspath bindings/python) \
  PYTHONDONTWRITEBYTECODE=1

CHECK_STEPS += check-docs

.PHONY: check-docs check-docs-c check-docs-py doc-outputs

check-docs: check-docs-c check-docs-py

check-docs-c: $(DOC_C_NAMES:%=$(O)/examples/%)
	@set -e; for n in $(DOC_C_NAMES); do \
	  case $$n in redis*) \
	    if ! command -v redis-server >/dev/null 2>&1; then \
	      echo "check-docs: SKIP examples/$$n.c (no redis-server)"; \
	      continue; fi; \
	    ./test/run-redis.sh sh -c 'ADMIT_REDIS_URL=$$ADMIT_TEST_REDIS_URL "$$0"' \
	      $(O)/examples/$$n > $(O)/examples/$$n.out;; \
	  *) $(O)/examples/$$n > $(O)/examples/$$n.out;; esac; \
	  diff -u doc/out/$$n.txt $(O)/examples/$$n.out \
	    || { echo "check-docs: doc/out/$$n.txt differs from what" \
	         "examples/$$n.c prints"; exit 1; }; \
	  echo "check-docs: examples/$$n.c prints doc/out/$$n.txt"; done

check-docs-py: python
	@set -e; mkdir -p $(O)/doc-py; for f in $(DOC_PY_SRCS); do \
	  n=$${f##*/}; n=$${n%.py}; \
	  $(DOC_PY_ENV) $(PYTHON) $$f > $(O)/doc-py/$$n.out; \
	  diff -u doc/out/py-$$n.txt $(O)/doc-py/$$n.out \
	    || { echo "check-docs: doc/out/py-$$n.txt differs from what" \
	         "doc/py/$$n.py prints"; exit 1; }; \
	  echo "check-docs: doc/py/$$n.py prints doc/out/py-$$n.txt"; done

doc-outputs: $(DOC_C_NAMES:%=$(O)/examples/%) python
	@set -e; for n in $(DOC_C_NAMES); do \
	  case $$n in redis*) \
	    ./test/run-redis.sh sh -c 'ADMIT_REDIS_URL=$$ADMIT_TEST_REDIS_URL "$$0"' \
	      $(O)/examples/$$n > doc/out/$$n.txt;; \
	  *) $(O)/examples/$$n > doc/out/$$n.txt;; esac; done; \
	for f in $(DOC_PY_SRCS); do n=$${f##*/}; n=$${n%.py}; \
	  $(DOC_PY_ENV) $(PYTHON) $$f > doc/out/py-$$n.txt; done
