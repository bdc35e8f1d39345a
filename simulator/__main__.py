"""`python -m simulator --mode vllm|api|anthropic --port N [knobs...]`.

The same flags as `hybridgate sim`.
"""

from __future__ import annotations

import argparse
import sys

from simulator.config import add_arguments, from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description=(
            "Upstream simulator: a vLLM-like GPU server, an OpenAI-like API "
            "or an Anthropic-like Messages API."
        ),
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from simulator.server import run

    return run(from_args(args))


if __name__ == "__main__":
    sys.exit(main())
