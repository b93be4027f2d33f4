# Rate part: the install/pkg-config check (test/check-install.sh).
# It builds in its own directory with PREFIX=/usr, because admit.pc records
# the prefix it was built with.

CHECK_STEPS += check-install

.PHONY: check-install

check-install:
	./test/check-install.sh build/check-install
