"""Shared fixtures for the admit Python suite.

Coroutine tests (``async def test_...``) run in a fresh event loop each,
with asyncio debug mode on so a callback that blocks the loop is reported.
Redis tests use the throwaway server of test/run-redis.sh
(ADMIT_TEST_REDIS_URL) and are skipped when it is not set.
"""

import asyncio
import inspect
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import admit  # noqa: E402  (after the path is set)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    fn = pyfuncitem.obj
    if inspect.iscoroutinefunction(fn):
        args = {name: pyfuncitem.funcargs[name]
                for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(fn(**args), timeout=120))
        return True
    return None


@pytest.fixture
def clock():
    """A ManualClock starting at 1000 s."""
    return admit.ManualClock(1000.0)


@pytest.fixture
def redis_url():
    """The throwaway Redis server's URL (DB 15), or skip."""
    url = os.environ.get("ADMIT_TEST_REDIS_URL")
    if not url:
        pytest.skip("ADMIT_TEST_REDIS_URL is not set (run under "
                    "test/run-redis.sh)")
    return url


def pytest_report_header(config):
    return "admit %s (libadmit via %s)" % (admit.__version__,
                                            admit._admit.__file__)
