"""Upstream simulator: real HTTP servers that behave like vLLM or like a commercial API.

Used by tests, benchmarks and `hybridgate demo`. Run it with `python -m simulator`
or `hybridgate sim`; see `simulator.config` for every knob.
"""
