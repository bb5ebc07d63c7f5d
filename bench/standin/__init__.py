"""Small stand-ins for the parts of ComfyUI the node touches, for the CI tier and the benchmark.

Each follows the real API at ComfyUI v0.3.64 (a125cd84) and cites the file it mirrors; the
real-ComfyUI tier (tests/comfyui) checks the node against ComfyUI itself.
"""
