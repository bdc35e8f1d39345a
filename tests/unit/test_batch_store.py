"""proxy/batch/store.py (the memory:// store on disk) and proxy/batch/lines.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from proxy.batch.lines import BadLine, Line, parse_lines
from proxy.batch.store import DirStore

ALIASES = frozenset({"chat"})


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_final_line_record_is_never_overwritten_and_survives_a_restart(tmp_path: Path) -> None:
    async def go() -> None:
        s = DirStore(tmp_path)
        assert await s.put_line("b1", 0, {"final": False, "started": 1})
        assert await s.put_line("b1", 0, {"final": True, "ok": True, "out": {"x": 1}})
        assert not await s.put_line("b1", 0, {"final": True, "ok": False, "out": {"x": 2}})
        assert not await s.put_line("b1", 0, {"final": False, "started": 1})
        await s.put_batch({"id": "b1", "status": "in_progress"})
        again = DirStore(tmp_path)
        await again.load()
        assert (await again.lines("b1"))[0]["out"] == {"x": 1}
        assert (await again.get_batch("b1")) == {"id": "b1", "status": "in_progress"}

    run(go())


def test_a_record_torn_by_a_crash_is_not_counted_done(tmp_path: Path) -> None:
    async def go() -> None:
        s = DirStore(tmp_path)
        await s.put_line("b2", 0, {"final": True, "ok": True, "out": {}})
        await s.put_line("b2", 1, {"final": False, "started": 1})
        with open(tmp_path / "lines" / "b2.jsonl", "a") as f:
            f.write('{"_i": 1, "final": true, "ok": tr')  # the process died mid-write
        again = DirStore(tmp_path)
        await again.load()
        lines = await again.lines("b2")
        assert lines[0]["final"] and not lines[1]["final"]

    run(go())


def test_a_store_never_used_leaves_nothing_on_disk(tmp_path: Path) -> None:
    run(DirStore(tmp_path / "nothing").load())
    assert not (tmp_path / "nothing").exists()


def test_lines_each_a_request_or_its_own_error() -> None:
    ok = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
          "body": {"model": "chat", "messages": [{"role": "user", "content": "x"}]}}  # fmt: skip
    content = "\n".join(
        [json.dumps(ok), "", "nope", json.dumps(ok), json.dumps({**ok, "custom_id": "b"})]
    ).encode()
    parsed = parse_lines(content, "/v1/chat/completions", ALIASES)
    assert [type(p) for p in parsed] == [Line, BadLine, BadLine, Line]
    assert [p.index for p in parsed] == [0, 1, 2, 3]  # blank lines are not lines
    assert isinstance(parsed[2], BadLine) and parsed[2].code == "duplicate_custom_id"
    emb = parse_lines(json.dumps(ok).encode(), "/v1/embeddings", ALIASES)[0]
    assert isinstance(emb, BadLine) and emb.code == "mismatched_url"


def test_check_refuses_a_batch_policy_that_points_nowhere() -> None:
    import pytest

    from proxy.config import ConfigError, parse_config

    text = """
backends:
  gpu: {base_url: "http://127.0.0.1:1/v1", pool: p}
  oai: {base_url: "http://127.0.0.1:2/v1"}
  other: {base_url: "http://127.0.0.1:3/v1", batch: true}
gpu_pools: {p: {gpus: 1, usd_per_gpu_hour: 1}}
models:
  chat: {targets: [{backend: gpu, model: m}, {backend: oai, model: gpt-4o-mini}]}
batch:
  aliases:
    chat: {provider: oai}
    nope: {}
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.problems == [
        "batch.aliases.chat.provider: backend 'oai' needs type openai, batch: true",
        "batch.aliases.nope: unknown model alias 'nope' (known: chat)",
    ]
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("chat: {provider: oai}", "chat: {provider: other}"))
    assert "batch.aliases.chat.provider: 'other' is not a target of 'chat'" in err.value.problems
    ok = parse_config(
        text.replace("    nope: {}\n", "").replace(
            'oai: {base_url: "http://127.0.0.1:2/v1"}',
            'oai: {base_url: "http://127.0.0.1:2/v1", batch: true}',
        )
    )
    assert ok.batch.aliases["chat"].provider == "oai"


def test_concurrent_writes_of_one_batch_all_land_and_the_last_wins(tmp_path: Path) -> None:
    """A cancel and the runner's save write the same batch at once (seen in a test run:
    both threads used one `.tmp` name, so one os.replace found it gone and the runner died
    with the batch stuck in `cancelling`)."""

    async def go() -> None:
        s = DirStore(tmp_path)
        await asyncio.gather(*(s.put_batch({"id": "b1", "n": i}) for i in range(64)))
        assert (await s.get_batch("b1")) == {"id": "b1", "n": 63}
        again = DirStore(tmp_path)
        await again.load()
        assert (await again.get_batch("b1")) == {"id": "b1", "n": 63}

    run(go())
