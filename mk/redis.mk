# The Redis-coordinated limiter: embedded Lua scripts, Redis tests, bench.

# Order matters: it must match admit__script_id_t in lib/redis-script.h.
REDIS_LUA := lib/lua/limit.lua lib/lua/sem.lua lib/lua/beat.lua

GEN_SRCS += $(O)/gen/redis-lua.c

$(O)/gen/redis-lua.c: tools/embed-lua.sh lib/lua/_lib.lua $(REDIS_LUA)
	@mkdir -p $(dir $@)
	./tools/embed-lua.sh $@ lib/lua/_lib.lua $(REDIS_LUA)

# `make bench` runs bench/bench-redis.c with the others (it starts its own
# throwaway server through test/run-redis.sh); this runs it alone.
.PHONY: bench-redis
bench-redis: $(O)/bench/bench-redis
	./test/run-redis.sh $(O)/bench/bench-redis
