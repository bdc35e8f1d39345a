"""Steady synthetic traffic for the CPU stack (compose.cpu.yml), so the dashboards fill.

Both teams, both aliases, some streaming, now and then a confidential request that must
stay self-hosted. Errors are printed and the loop goes on: the point is to watch the
proxy handle them, not to stop at the first one.
"""

from __future__ import annotations

import os
import random
import time

import httpx

PROXY_URL = os.environ.get("PROXY_URL", "http://proxy:4000/v1")
KEYS = [os.environ["TEAM_A_KEY"], os.environ["TEAM_B_KEY"]]
RATE = float(os.environ.get("REQUESTS_PER_SECOND", "2"))
PROMPTS = [
    "Summarise this ticket in one line: the export button does nothing on Safari.",
    "Write a haiku about idle GPUs.",
    "Translate to French: the invoice is attached.",
    "List three risks of running your own inference cluster.",
]


def one_request(client: httpx.Client, rng: random.Random) -> int:
    alias = "frontier" if rng.random() < 0.15 else "chat"
    headers = {"Authorization": f"Bearer {rng.choice(KEYS)}"}
    if alias == "chat" and rng.random() < 0.1:
        headers["x-data-class"] = "confidential"
    body = {
        "model": alias,
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": rng.randint(16, 256),
        "stream": rng.random() < 0.5,
    }
    with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
        r.read()
        return r.status_code


def main() -> None:
    rng = random.Random()
    with httpx.Client(base_url=PROXY_URL, timeout=120) as client:
        while True:
            started = time.monotonic()
            try:
                status = one_request(client, rng)
                if status != 200:
                    print(f"proxy answered {status}", flush=True)
            except httpx.HTTPError as exc:
                print(f"request failed: {exc!r}", flush=True)
            time.sleep(max(0.0, rng.expovariate(RATE) - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
