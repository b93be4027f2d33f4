# The C example service (examples/c/server.c): `make examples` builds it
# against $(O)/libadmit.a; check-c-example runs its HTTP tests
# (test/c-example/) natively and under valgrind, with a throwaway
# redis-server for the shared-quota test, then builds it the way a user
# would, with examples/c/Makefile and pkg-config against an install into a
# temporary DESTDIR.

CHECK_STEPS += check-c-example

C_EXAMPLE_ENV := env PYTHONDONTWRITEBYTECODE=1 \
  ADMIT_C_EXAMPLE=$(abspath $(O)/examples/c/server)
C_EXAMPLE_PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider test/c-example
C_EXAMPLE_VALGRIND := valgrind -q --error-exitcode=99 --leak-check=full \
  --show-leak-kinds=all --errors-for-leak-kinds=all

.PHONY: check-c-example

check-c-example: $(O)/examples/c/server
	./test/run-redis.sh $(C_EXAMPLE_ENV) $(C_EXAMPLE_PYTEST)
	./test/run-redis.sh $(C_EXAMPLE_ENV) \
	  ADMIT_C_EXAMPLE_WRAP="$(C_EXAMPLE_VALGRIND)" $(C_EXAMPLE_PYTEST)
	./test/c-example/install.sh build/c-example-install
