"""Small stand-ins for the parts of ComfyUI the node touches, for the CI tier and the benchmark.

Each follows the real API at ComfyUI v0.3.64 (a125cd84) unless its docstring names another release
(v0.30.0, v0.33.0, or a commit after v0.33.0 that was read but not run, e.g. memory_estimate.py), and
cites the file it mirrors; the real-ComfyUI tier (tests/comfyui) checks the node against ComfyUI itself.
"""
