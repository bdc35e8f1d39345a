"""The simulator's token rules: documented, deterministic, predictable by tests."""

from __future__ import annotations

from simulator.tokens import PrefixCache, count_chat, count_prompt, count_text, filler_text


def test_text_is_a_quarter_of_its_characters_rounded_up_at_least_one():
    assert count_text("") == 1
    assert count_text("abc") == 1
    assert count_text("abcd") == 1
    assert count_text("abcde") == 2
    assert count_text("x" * 400) == 100


def test_chat_sums_messages_parts_tool_arguments_and_tools():
    messages = [
        {"role": "system", "content": "x" * 8},  # 2
        {"role": "user", "content": [{"type": "text", "text": "y" * 12}, {"type": "image_url"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ]},  # 7 chars -> 2
    ]  # fmt: skip
    assert count_chat(messages) == 2 + 3 + 2
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert count_chat(messages, tools) == 7 + count_text(
        '[{"type":"function","function":{"name":"f"}}]'
    )


def test_completion_prompt_string_or_token_ids():
    assert count_prompt("hello world!") == 3
    assert count_prompt([1, 2, 3, 4, 5]) == 5


def test_filler_text_has_one_word_per_token():
    assert filler_text(3) == "the quick brown"
    assert len(filler_text(40).split()) == 40


def test_prefix_cache_hits_whole_earlier_messages_in_blocks():
    cache = PrefixCache()
    system = {"role": "system", "content": "s" * 200}  # 50 tokens
    first = [system, {"role": "user", "content": "hi"}]
    assert cache.lookup_and_insert(first, count_chat(first)) == 0
    second = [system, {"role": "user", "content": "another question"}]
    assert cache.lookup_and_insert(second, count_chat(second)) == 48  # 50 -> whole blocks of 16
    # the same prompt again: everything but the last token could be cached
    assert cache.lookup_and_insert(second, count_chat(second)) == 48
