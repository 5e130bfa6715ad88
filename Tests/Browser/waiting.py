"""Waiting in the browser tests: always for a condition, with a deadline and a message."""
import time

import pytest


def wait_for(predicate, timeout, what, interval=0.1):
    """Polls `predicate` every `interval` seconds (the poll interval is the only sleep)
    until it returns something truthy, and returns that; fails the test after `timeout`
    seconds, saying what did not happen (`what`: a string, or a function giving one) and
    what the predicate last returned."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what} (last: {last!r})")
        time.sleep(interval)
