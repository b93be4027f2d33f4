"""The seed's `limits` code next to admit, on the same hits: the same
answers while under the limit, different ones where the semantics differ
(a denied hit costs nothing in admit; several limits are all-or-nothing).
Output: doc/out/py-migrate_limits.txt, compared by `make check`."""
import time

from limits import parse, parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

import admit

# Before: limits (the seed used RedisStorage("redis://redis:6379")).
storage = MemoryStorage()
old = FixedWindowRateLimiter(storage)
free = parse("10/minute")

# After: admit, a fixed window too (a ManualClock makes the run exact).
clock = admit.ManualClock()
new = admit.KeyedLimiter({"free": "10/minute"}, algorithm="fixed_window",
                         clock=clock)


def both(what, cost=1):
    a = old.hit(free, "user:42", cost=cost)
    b = new.hit("user:42", cost, tier="free")
    print("%-22s limits=%-5s admit=%s" % (what, a, b))


for i in range(8):
    both("hit %d" % (i + 1))
both("hit of cost 5", 5)  # both deny: 8 + 5 > 10
both("hit of cost 2", 2)  # limits counted the denied 5; admit did not
print("admit remaining:", new.peek("user:42", tier="free").remaining)

# Several limits: checked one by one with limits, a request refused by the
# second still used the first; admit checks them all or nothing.
old_items = parse_many("3/minute;2/second")
new2 = admit.KeyedLimiter("3/minute;2/second", algorithm="fixed_window",
                          clock=clock)


def request(what):
    a = all(old.hit(item, "user:7") for item in old_items)
    d = new2.try_acquire("user:7")
    print("%-22s limits=%-5s admit=%s" % (what, a, d.allowed))


for i in range(3):
    request("request %d" % (i + 1))
time.sleep(1.1)
clock.advance(1.1)
request("1.1 s later")
