"""`make demo`'s orchestration: services, worker, API and simulator until the map has colour."""

from __future__ import annotations

import httpx
import pytest

from pingan.demo import run_demo
from pingan.services import free_loopback_ports
from tests.support.defaults import default_settings

pytestmark = pytest.mark.integration


def test_demo_colours_the_whole_map_within_a_minute(tmp_path, capsys) -> None:
    kafka_port, clickhouse_port, http_port, api_port = free_loopback_ports(4)
    settings = default_settings(
        data_dir=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        clickhouse_port=clickhouse_port,
        clickhouse_http_port=http_port,
        api_port=api_port,
        worker_id="demo-test",
    )
    from pingan import services

    try:
        # run_demo waits (at most its READY_TIMEOUT_S) for >= 900 grids with one not green, then returns
        assert run_demo(settings, exit_when_ready=True) == 0
        out = capsys.readouterr().out
        assert f"http://127.0.0.1:{api_port}/v1/grids/risk" in out
        assert f"live map     http://127.0.0.1:{api_port}/ " in out
        seconds = int(out.split("running (")[1].split("s to a coloured map")[0])
        assert seconds <= 60
    finally:
        services.down(settings)
    # everything the demo started is stopped again
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1)
