# `make demo`: the example service (examples/fastapi) in front of a fake
# LLM vendor, driven by a burst of mixed traffic; prints what every layer
# of admit decided and exits non-zero if that contradicts the design.
#
#   make demo              one service process, limits in process
#   make demo REDIS=1      a throwaway redis-server and DEMO_PODS service
#                          processes sharing every limit through it
#   make demo DEMO_SECONDS=10
#
# check-demo runs both modes in a short form inside `make check`.

DEMO_SECONDS ?= 15
DEMO_PODS ?= 3
DEMO_SHORT_SECONDS ?= 6
DEMO_RUN = env PYTHONPATH=$(abspath bindings/python) PYTHONDONTWRITEBYTECODE=1 \
  $(PYTHON) examples/fastapi/demo.py

CHECK_STEPS += check-demo

.PHONY: check-demo

demo: deps python
	@$(DEMO_RUN) --seconds $(DEMO_SECONDS) \
	  $(if $(filter-out 0 no,$(REDIS)),--redis --pods $(DEMO_PODS))

check-demo: python
	$(DEMO_RUN) --seconds $(DEMO_SHORT_SECONDS)
	$(DEMO_RUN) --seconds $(DEMO_SHORT_SECONDS) --redis --pods $(DEMO_PODS)
