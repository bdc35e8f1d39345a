"""Per-key rate limits (`auth.keys[].rpm`, `.tpm`) in fixed windows shared through the store.

Windows are aligned to the epoch (`floor(now / window_s)`), so every replica agrees on
which window a moment belongs to without talking. A request counts against `rpm` when
it is admitted; its tokens count against `tpm` when it finishes (from its UsageEvent),
so `tpm` rejects new requests once the window's tokens are already over the limit.
`state.rate_window_s` (default 60) sets the window length; rpm and tpm are the limits
per window, so change it only for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxy.config import Config
from proxy.request.errors import ProxyError


@dataclass(frozen=True, slots=True)
class KeyLimit:
    key_name: str
    rpm: int | None
    tpm: int | None
    f_req: str
    f_tok: str


def window_id(ts: float, window_s: float) -> int:
    return int(ts // window_s)


class RateLimits:
    def __init__(self, config: Config) -> None:
        self.window_s = float(config.state.rate_window_s)
        self.by_key: dict[str, KeyLimit] = {}
        for i, k in enumerate(config.auth.keys):
            if k.rpm is None and k.tpm is None:
                continue
            name = k.name or f"key{i}"
            self.by_key[name] = KeyLimit(name, k.rpm, k.tpm, f"{name}|req", f"{name}|tok")

    def _window_words(self) -> str:
        w = self.window_s
        return "minute" if w == 60 else f"{w:g}s window"

    def error(self, lim: KeyLimit, kind: str, used: int, wid: int, now: float) -> ProxyError:
        """429 with `retry-after` (seconds to the next window) and OpenAI's ratelimit headers."""
        reset_in = max(1, math.ceil((wid + 1) * self.window_s - now))
        if kind == "requests":
            limit = lim.rpm or 0
            what = f"{limit} requests per {self._window_words()} (rpm)"
        else:
            limit = lim.tpm or 0
            what = f"{limit} tokens per {self._window_words()} (tpm; {used} used)"
        return ProxyError(
            429,
            f"Rate limit reached for key '{lim.key_name}': {what}. "
            f"Please try again in {reset_in}s.",
            type_="rate_limit_error",
            code="rate_limit_exceeded",
            headers=[
                (b"retry-after", str(reset_in).encode()),
                (f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), b"0"),
                (f"x-ratelimit-reset-{kind}".encode(), f"{reset_in}s".encode()),
            ],
        )
