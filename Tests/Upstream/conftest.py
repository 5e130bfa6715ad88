"""Fixtures shared by the upstream suites: a fake Binance-format upstream, and tickwire
processes started on it and stopped when the test ends."""
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "support"))
sys.path.insert(0, str(HERE))
from fake_upstream import FakeUpstream  # noqa: E402
from wsharness import Process, wait_for  # noqa: E402


@pytest.fixture
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def tickwire(tmp_path):
    """`tickwire(fake, *args, streams=None)` starts tickwire on a fake upstream and returns it
    once it has connected; every one started is stopped when the test ends."""
    started = []

    def start(fake, *args, streams=None):
        url = fake.url(streams) if streams else fake.url()
        srv = Process(tmp_path, "--workers", "1", "--upstream", url, *args)
        started.append(srv)
        wait_for(lambda: fake.open_connections(), what="tickwire to connect to the upstream")
        return srv

    yield start
    for srv in started:
        srv.stop()
