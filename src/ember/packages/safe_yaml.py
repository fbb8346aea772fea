"""A package's YAML (ember.yaml, cog.yaml, a Truss config.yaml) parsed with bounds.

The file comes from whoever holds a deploy token. PyYAML's safe loader limits what it builds
(no Python objects) but not how big it is: an alias (`*a`) stands for a whole value read
before, so a few hundred bytes of aliases to aliases stand for billions of values once the
spec is written out as JSON (to the database, and into a replica's environment, where it ended
in E2BIG and a 500). Counting aliases would not bound that (k levels of n aliases expand
n**k-fold), so the document is measured with every alias written out and refused past a
budget, before anything is built from it; reusing a block (`<<: *defaults`), which a Cog or
Truss file may do, stays allowed. Depth is bounded too (serialisers recurse), and so are
numbers: `.inf` and `.nan` mean nothing in a package, and JSON cannot carry them.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

# What one package's YAML may come to with every alias written out (characters, about its
# size as JSON), and how deeply it may nest.
MAX_EXPANDED_SIZE = 256 * 1024
MAX_DEPTH = 32


class YamlLimitError(ValueError):
    """A YAML document past a bound; the message says which and what to do."""


def load(text: str) -> Any:
    """`text` as Python data, as `yaml.safe_load` reads it, or YamlLimitError if it
    expands past MAX_EXPANDED_SIZE, nests deeper than MAX_DEPTH, refers to itself or holds
    a non-finite number; yaml.YAMLError if it is not YAML."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the composer recurses once per level
            raise YamlLimitError(f"it nests more than {MAX_DEPTH} levels deep") from None
        if node is None:
            return None
        _measure(node, 0, {}, set())
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    _refuse_non_finite(data, "")
    return data


def _measure(
    node: yaml.Node, depth: int, measured: dict[int, tuple[int, int]], open_nodes: set[int]
) -> tuple[int, int]:
    """(size, height) of `node` with its aliases written out. An alias is the very node it
    names, so each node is measured once (`measured`, by identity) and a document costs
    time in proportion to its text, however far it would expand."""
    known = measured.get(id(node))
    if known is None:
        if isinstance(node, yaml.ScalarNode):
            known = (len(node.value) + 2, 1)
        elif id(node) in open_nodes:
            raise YamlLimitError("an alias refers to a value that contains it")
        elif depth >= MAX_DEPTH:
            raise YamlLimitError(f"it nests more than {MAX_DEPTH} levels deep")
        else:
            open_nodes.add(id(node))
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [part for pair in node.value for part in pair]
            )
            size, height = 2, 1
            for child in children:
                child_size, child_height = _measure(child, depth + 1, measured, open_nodes)
                size, height = size + child_size + 1, max(height, child_height + 1)
                if size > MAX_EXPANDED_SIZE:
                    raise YamlLimitError(
                        f"it comes to more than {MAX_EXPANDED_SIZE // 1024} KiB with its "
                        "aliases (*name) written out: write the values out, or use fewer aliases"
                    )
            open_nodes.discard(id(node))
            known = (size, height)
        measured[id(node)] = known
    if depth + known[1] > MAX_DEPTH:
        raise YamlLimitError(f"it nests more than {MAX_DEPTH} levels deep")
    return known


def _refuse_non_finite(value: Any, where: str) -> None:
    """YamlLimitError naming the first `.inf` or `.nan` (a value or a key) in `value`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise YamlLimitError(f"{where or 'the document'} is {value}: numbers must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            _refuse_non_finite(key, f"{inner} (a key)")
            _refuse_non_finite(item, inner)
    elif isinstance(value, (list, tuple, set)):
        for index, item in enumerate(value):
            _refuse_non_finite(item, f"{where}[{index}]")
