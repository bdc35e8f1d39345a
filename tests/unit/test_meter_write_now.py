"""Meter.write_now: what the cluster GPU books are about to report as done is on disk in
the request log before the call goes out (proxy/metering/cluster_gpu.py), and every other
slow sink still gets each event exactly once, in the background."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from costing.prices import PriceTable
from proxy.config import parse_config
from proxy.metering.events import UsageEvent
from proxy.metering.meter import Meter
from proxy.metering.request_log import RequestLog

CONFIG = """
backends:
  api: {type: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  chat: {targets: [{backend: api, model: m}]}
"""


@pytest.mark.timeout(10)
def test_write_now_puts_the_queue_on_disk_and_the_rest_gets_it_once(tmp_path: Path) -> None:
    async def main() -> None:
        meter = Meter(parse_config(CONFIG), PriceTable({}))
        path = tmp_path / "requests.jsonl"
        request_log = RequestLog(path)
        seen: list[str] = []

        async def other(batch: list[UsageEvent]) -> None:
            seen.extend(ev.request_id for ev in batch)

        meter.add_slow_sink(request_log)
        meter.add_slow_sink(other)
        for i in range(3):
            meter.deliver(UsageEvent(f"hg-{i}", 0.0, "chat"))
        meter.write_now()  # no await: the lines are written on this thread
        ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
        assert ids == ["hg-0", "hg-1", "hg-2"]
        meter.deliver(UsageEvent("hg-3", 0.0, "chat"))
        await meter.drain()
        assert seen == ["hg-0", "hg-1", "hg-2", "hg-3"]
        ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
        assert ids == ["hg-0", "hg-1", "hg-2", "hg-3"]  # each once
        request_log.close()

    asyncio.run(main())
