# deploy/: Kubernetes, compose and nginx files, and the fake vendor's tests.

CHECK_STEPS += check-deploy check-deploy-python

.PHONY: check-deploy check-deploy-python

# Validate deploy/ (YAML fields and cross-references, nginx -t), prove the
# validator catches broken copies of those files, and run the nginx gateway
# config for real in front of the fake vendor (test/deploy/).
check-deploy:
	$(PYTHON) test/deploy/check_deploy.py
	$(PYTHON) -m pytest -q -p no:cacheprovider test/deploy

# The fake vendor's tests. Once another fragment adds a check-python step
# (which runs all of test/python/), this one only says so.
check-deploy-python:
	@if echo " $(CHECK_STEPS) " | grep -q ' check-python '; then \
	  echo "test/python/test_fake_vendor.py runs in check-python"; \
	else \
	  $(PYTHON) -m pytest -q -p no:cacheprovider test/python/test_fake_vendor.py; \
	fi
