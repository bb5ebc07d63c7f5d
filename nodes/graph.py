"""What the rest of the queued graph does with the node's patched model, where that can be read from it.

ComfyUI's model merge nodes (comfy_extras/nodes_model_merging.py and nodes_model_merging_model_specific.py:
ModelMergeSimple, ModelSubtract, ModelAdd, ModelMergeBlocks and the per-family ModelMerge* nodes) clone
``model1`` and take only the weight patches of ``model2`` (``model2.get_key_patches``). A CGTaylorCache
feeding ``model2`` is dropped with every other hook of that model, and nothing would ever say so.
"""

from __future__ import annotations


def merges_dropping(prompt: object, node_id: str | None) -> list[str]:
    """The nodes of ``prompt`` (ComfyUI's API-format graph, the PROMPT hidden input) that take the output
    of node ``node_id`` as the ``model2`` of a merge, described as "ModelMergeSimple (node 12)"."""
    if not isinstance(prompt, dict) or node_id is None:
        return []
    found = []
    for other_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict) or "model1" not in inputs:
            continue
        link = inputs.get("model2")
        if isinstance(link, (list, tuple)) and len(link) == 2 and str(link[0]) == str(node_id):
            found.append(f"{node.get('class_type', 'a merge node')} (node {other_id})")
    return found
