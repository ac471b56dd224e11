"""The search tree: one `SearchNode` per generated token, with rendering and export.

Nodes are anytree nodes (`anytree.NodeMixin`), so `parent`, `children`, `siblings` and
`is_leaf` come from anytree. Two anytree names mean something else here:

- `depth` is a stored field (0 for the tree's root, 1 for children of the prompt), not the
  distance computed by anytree. They agree until the search advances its root.
- `path()` is a method that returns a list, not anytree's `path` tuple property, and
  `ancestors` is redefined on top of it. `anytree.Walker` reads the `path` property, so it
  does not work on search nodes.

anytree's iterators (`PreOrderIter`, `descendants`, `height`) and `RenderTree` recurse once
per level and raise `RecursionError` past about 1,000 levels. Everything in this module walks
the tree with an explicit stack instead, so trees thousands of tokens deep render, export and
load. Use `iter_nodes` for the same reason.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anytree import NodeMixin
from anytree.render import ContStyle

logger = logging.getLogger(__name__)

TREE_FORMAT = "tempo_search.tree"
TREE_FORMAT_VERSION = 1

# Far above the length of generated text (budgets of a few thousand tokens), and low enough that
# a corrupt file is rejected before it builds an absurd chain of nodes.
DEFAULT_MAX_LOAD_DEPTH = 100_000

_ROOT_TOKEN_ID = -1
_NO_SLOT = -1


class SearchNode(NodeMixin):
    """One node of the search tree: a generated token and its search statistics.

    Attributes:
        node_id: id of the node, unique and stable within one search.
        token_id: vocabulary id of the token; -1 for the root.
        text: decoded text of this token alone; "" for the root.
        prior: the model's next-token probability for this token at its parent, after any
            task constraints; P(s, a) in PUCT.
        log_prob: natural log of the model's probability of this token given its parent.
        visit_count: number of values backed up through this node; N(s, a) in PUCT. Each node
            evaluated at or below it adds one, so a simulation that opens k children adds k
            (the children of a root can sum to more than `SearchStats.simulations`).
        value_sum: sum of the values backed up through this node.
        best_value: highest value backed up through this node (the best text below it); 0.0
            while unvisited.
        virtual_loss: number of selections in flight through this node in the current batch.
        is_expanded: whether the node's children have been created by an expansion.
        is_terminal: whether the path ends here (end-of-sequence token or a task's stop rule).
        reward: task reward of the finished path, or None when no reward was computed.
        value: cached evaluation of this node in [0, 1], or None before it is evaluated.
        depth: 0 for the root, parent's depth + 1 otherwise (see the module docstring).
        slot: index of this node's entries in the shared KV cache; -1 when not cached.
        pruned: whether retroactive pruning removed this node.
        coherence: attention-derived coherence of the path to this node, or None.
    """

    __slots__ = (
        "best_value",
        "coherence",
        "depth",
        "is_expanded",
        "is_terminal",
        "log_prob",
        "node_id",
        "prior",
        "pruned",
        "reward",
        "slot",
        "text",
        "token_id",
        "value",
        "value_sum",
        "virtual_loss",
        "visit_count",
    )

    def __init__(
        self,
        *,
        node_id: int,
        token_id: int = _ROOT_TOKEN_ID,
        text: str = "",
        prior: float = 1.0,
        log_prob: float = 0.0,
        parent: SearchNode | None = None,
        depth: int | None = None,
        slot: int = _NO_SLOT,
        visit_count: int = 0,
        value_sum: float = 0.0,
        virtual_loss: int = 0,
        is_expanded: bool = False,
        is_terminal: bool = False,
        reward: float | None = None,
        value: float | None = None,
        pruned: bool = False,
        coherence: float | None = None,
    ) -> None:
        # The search creates thousands of nodes, so the constructor does not validate its
        # arguments. `tree_from_dict` validates untrusted input.
        self.node_id = node_id
        self.token_id = token_id
        self.text = text
        self.prior = prior
        self.log_prob = log_prob
        self.visit_count = visit_count
        self.value_sum = value_sum
        self.best_value = 0.0
        self.virtual_loss = virtual_loss
        self.is_expanded = is_expanded
        self.is_terminal = is_terminal
        self.reward = reward
        self.value = value
        self.slot = slot
        self.pruned = pruned
        self.coherence = coherence
        if depth is None:
            depth = 0 if parent is None else parent.depth + 1
        self.depth = depth
        if parent is not None:
            # anytree's parent setter walks up from `parent` to check for cycles: O(depth).
            self.parent = parent

    @property
    def q_value(self) -> float:
        """Mean backed-up value, `value_sum / visit_count`; 0.0 while unvisited."""
        if self.visit_count == 0:
            return 0.0
        return self.value_sum / self.visit_count

    def path(self) -> list[SearchNode]:
        """Return the nodes from the tree's root down to this node, both included."""
        nodes = list(self.iter_path_reverse())
        nodes.reverse()
        return nodes

    @property
    def ancestors(self) -> tuple[SearchNode, ...]:
        """Nodes from the tree's root down to this node's parent."""
        return tuple(self.path()[:-1])

    def token_ids(self) -> list[int]:
        """Return the token ids on the path below the tree's root, in generation order."""
        return [node.token_id for node in self.path()[1:]]

    def path_text(self) -> str:
        """Return the concatenated `text` of the nodes below the tree's root.

        Per-token texts can differ from decoding `token_ids()` in one call (byte-level BPE
        splits a multi-byte character over several tokens), so decode the ids with the
        tokenizer when the exact string matters.
        """
        return "".join(node.text for node in self.path()[1:])

    def __repr__(self) -> str:
        return (
            f"SearchNode(node_id={self.node_id}, token_id={self.token_id}, "
            f"text={self.text!r}, visit_count={self.visit_count}, "
            f"q_value={self.q_value:.4f}, prior={self.prior:.4f})"
        )


def iter_nodes(root: SearchNode) -> Iterator[SearchNode]:
    """Yield `root` and its descendants in pre-order, children in their stored order.

    Unlike `anytree.PreOrderIter`, this walks with an explicit stack, so any depth works.
    """
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


# ----------------------------------------------------------------------------------------
# Rendering


def _visible_text(text: str) -> str:
    """Return `text` quoted, with spaces as "␣" and control characters escaped."""
    pieces = []
    for char in text:
        if char == " ":
            pieces.append("␣")
        elif char == "\\":
            pieces.append("\\\\")
        elif char == "\n":
            pieces.append("\\n")
        elif char == "\t":
            pieces.append("\\t")
        elif char == "\r":
            pieces.append("\\r")
        elif not char.isprintable():
            # repr gives \xNN, \uNNNN or \UNNNNNNNN for the character; strip its quotes.
            pieces.append(repr(char)[1:-1])
        else:
            pieces.append(char)
    return "'" + "".join(pieces) + "'"


def _node_label(node: SearchNode) -> str:
    token = "<root>" if node.is_root else _visible_text(node.text)
    label = f"{token} N={node.visit_count} Q={node.q_value:.3f} P={node.prior:.3f}"
    if node.is_terminal:
        label += " terminal"
    if node.pruned:
        label += " pruned"
    return label


def _visit_order_key(node: SearchNode) -> tuple[int, float, int]:
    return (-node.visit_count, -node.prior, node.node_id)


def _check_count(name: str, value: Any, minimum: int, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def render_tree(
    root: SearchNode,
    *,
    max_depth: int | None = None,
    max_children: int | None = None,
    min_visits: int = 0,
) -> str:
    """Render the tree under `root` as text, most visited children first.

    Each line is `'␣cat' N=12 Q=0.634 P=0.210`: the token text quoted (space as "␣", newline
    as "\\n"), visit_count, q_value and prior, then "terminal" or "pruned" where they apply.

    Args:
        root: the node to render from; it need not be the tree's root.
        max_depth: levels shown below `root` (0 shows `root` alone); None shows all.
        max_children: children shown per node; the rest are summarised in one
            "… k more" line. None shows all.
        min_visits: children with a smaller visit_count are left out without a summary
            line; 0 shows unvisited children too.

    Returns:
        The rendering, one node per line, without a trailing newline.
    """
    if not isinstance(root, SearchNode):
        raise TypeError(f"root must be a SearchNode, got {type(root).__name__}")
    _check_count("max_depth", max_depth, 0, allow_none=True)
    _check_count("max_children", max_children, 1, allow_none=True)
    _check_count("min_visits", min_visits, 0, allow_none=False)

    style = ContStyle()
    lines = [_node_label(root)]

    # Each stack entry is (row, indent, is_last, level). A row is a node or the text of a
    # "… k more" line, and indent is the prefix shared by the row and its siblings.
    stack: list[tuple[SearchNode | str, str, bool, int]] = []

    def push_children(node: SearchNode, indent: str, level: int) -> None:
        if max_depth is not None and level >= max_depth:
            return
        shown = [child for child in node.children if child.visit_count >= min_visits]
        shown.sort(key=_visit_order_key)
        rows: list[SearchNode | str] = list(shown)
        if max_children is not None and len(shown) > max_children:
            hidden = shown[max_children:]
            hidden_visits = sum(child.visit_count for child in hidden)
            rows = [*shown[:max_children], f"… {len(hidden)} more N={hidden_visits}"]
        # Push in reverse so that the first row is popped first.
        for position in range(len(rows) - 1, -1, -1):
            is_last = position == len(rows) - 1
            stack.append((rows[position], indent, is_last, level + 1))

    push_children(root, "", 0)
    while stack:
        row, indent, is_last, level = stack.pop()
        branch = style.end if is_last else style.cont
        if isinstance(row, str):
            lines.append(indent + branch + row)
            continue
        lines.append(indent + branch + _node_label(row))
        # Below the last child of a node, the vertical bar stops.
        child_indent = indent + (style.empty if is_last else style.vertical)
        push_children(row, child_indent, level)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Visit distribution


@dataclass(frozen=True)
class VisitShare:
    """Search statistics of one child of the root.

    Attributes:
        text: decoded text of the child's token.
        token_id: vocabulary id of the child's token.
        node_id: id of the child node.
        visit_count: the child's visit count.
        share: visit_count divided by the sum over the root's children; 0.0 when no child
            was visited.
        q_value: the child's mean backed-up value.
        prior: the child's prior.
    """

    text: str
    token_id: int
    node_id: int
    visit_count: int
    share: float
    q_value: float
    prior: float


def visit_distribution(root: SearchNode) -> list[VisitShare]:
    """Return one `VisitShare` per child of `root`, most visited first.

    Shares are normalised over the children's visit counts rather than `root.visit_count`,
    because the root's own count also includes the simulation that expanded it.
    `pandas.DataFrame(visit_distribution(root))` gives a table.
    """
    if not isinstance(root, SearchNode):
        raise TypeError(f"root must be a SearchNode, got {type(root).__name__}")
    children = sorted(root.children, key=_visit_order_key)
    total = sum(child.visit_count for child in children)
    return [
        VisitShare(
            text=child.text,
            token_id=child.token_id,
            node_id=child.node_id,
            visit_count=child.visit_count,
            share=child.visit_count / total if total > 0 else 0.0,
            q_value=child.q_value,
            prior=child.prior,
        )
        for child in children
    ]


# ----------------------------------------------------------------------------------------
# JSON export and import

# Keys of a node record grouped by type, then all keys in the order written. "parent_id" is
# the node_id of the parent, or None for the root.
_INT_KEYS = ("node_id", "token_id", "visit_count", "virtual_loss", "depth", "slot")
_FLOAT_KEYS = ("prior", "log_prob", "value_sum")
_OPTIONAL_FLOAT_KEYS = ("reward", "value", "coherence")
_BOOL_KEYS = ("is_expanded", "is_terminal", "pruned")
_NODE_KEYS = (
    "node_id",
    "parent_id",
    "token_id",
    "text",
    "prior",
    "log_prob",
    "visit_count",
    "value_sum",
    "virtual_loss",
    "is_expanded",
    "is_terminal",
    "reward",
    "value",
    "depth",
    "slot",
    "pruned",
    "coherence",
)


def _node_record(node: SearchNode) -> dict[str, Any]:
    parent = node.parent
    return {
        "node_id": node.node_id,
        "parent_id": None if parent is None else parent.node_id,
        "token_id": node.token_id,
        "text": node.text,
        "prior": node.prior,
        "log_prob": node.log_prob,
        "visit_count": node.visit_count,
        "value_sum": node.value_sum,
        "virtual_loss": node.virtual_loss,
        "is_expanded": node.is_expanded,
        "is_terminal": node.is_terminal,
        "reward": node.reward,
        "value": node.value,
        "depth": node.depth,
        "slot": node.slot,
        "pruned": node.pruned,
        "coherence": node.coherence,
    }


def tree_to_dict(root: SearchNode) -> dict[str, Any]:
    """Convert the tree under `root` to a JSON-ready dict.

    The layout is flat, so that deep trees need no recursion to write or read:
    `{"format": "tempo_search.tree", "version": 1, "nodes": [...]}`, where `nodes` lists one
    record per node in pre-order (the root first, every parent before its children, siblings
    in their stored order). A record has the `SearchNode` fields plus `parent_id`, the
    parent's node_id (None for `root`). `pandas.DataFrame(d["nodes"])` gives a table.
    """
    if not isinstance(root, SearchNode):
        raise TypeError(f"root must be a SearchNode, got {type(root).__name__}")
    nodes = [_node_record(node) for node in iter_nodes(root)]
    # `root` may be an inner node of a larger tree; the exported tree starts at it.
    nodes[0]["parent_id"] = None
    return {"format": TREE_FORMAT, "version": TREE_FORMAT_VERSION, "nodes": nodes}


def save_tree_json(root: SearchNode, path: str | Path) -> None:
    """Write the tree under `root` to `path` as JSON (see `tree_to_dict` for the layout).

    Raises:
        ValueError: a number in the tree is NaN or infinite, which JSON cannot store.
    """
    data = tree_to_dict(root)
    for record in data["nodes"]:
        for key in (*_FLOAT_KEYS, *_OPTIONAL_FLOAT_KEYS):
            number = record[key]
            if number is not None and not math.isfinite(number):
                raise ValueError(
                    f"cannot save the tree to {str(path)!r}: {key}={number} at node "
                    f"{record['node_id']} is not finite, and JSON stores finite numbers only; "
                    f"set it to a finite value (or None where the field allows it) first"
                )
    with Path(path).open("w", encoding="utf-8") as file:
        # ASCII escapes keep the file valid even for token texts with lone surrogates.
        json.dump(data, file, allow_nan=False)
        file.write("\n")
    logger.debug("saved %d nodes to %s", len(data["nodes"]), path)


class _TreeFileError(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _TreeFileError(f"non-finite number {name} found; JSON trees store finite numbers only")


def _invalid(source: str, problem: str) -> ValueError:
    return ValueError(
        f"{source} is not a tempo_search tree JSON: {problem}; "
        f"write trees with tempo_search.tree.save_tree_json"
    )


def _check_record(record: Any, index: int, source: str) -> None:
    """Check the keys and value types of `nodes[index]`."""
    if not isinstance(record, dict):
        raise _invalid(source, f"nodes[{index}] is a {type(record).__name__}, not an object")
    where = f"node {record.get('node_id', '?')} (nodes[{index}])"
    for key in _NODE_KEYS:
        if key not in record:
            raise _invalid(source, f"key {key!r} missing at {where}")

    def wrong(key: str, expected: str) -> ValueError:
        return _invalid(source, f"key {key!r} at {where} must be {expected}, got {record[key]!r}")

    for key in _INT_KEYS:
        if isinstance(record[key], bool) or not isinstance(record[key], int):
            raise wrong(key, "an integer")
    for key in _BOOL_KEYS:
        if not isinstance(record[key], bool):
            raise wrong(key, "true or false")
    if not isinstance(record["text"], str):
        raise wrong("text", "a string")
    parent_id = record["parent_id"]
    if parent_id is not None and (isinstance(parent_id, bool) or not isinstance(parent_id, int)):
        raise wrong("parent_id", "an integer or null")
    for key in (*_FLOAT_KEYS, *_OPTIONAL_FLOAT_KEYS):
        number = record[key]
        if number is None and key in _OPTIONAL_FLOAT_KEYS:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            expected = "a number or null" if key in _OPTIONAL_FLOAT_KEYS else "a number"
            raise wrong(key, expected)
        if not math.isfinite(number):
            raise wrong(key, "a finite number")
    for key in ("visit_count", "virtual_loss"):
        if record[key] < 0:
            raise wrong(key, "a non-negative integer")


def tree_from_dict(
    data: Any, *, source: str = "the data", max_depth: int = DEFAULT_MAX_LOAD_DEPTH
) -> SearchNode:
    """Build a tree from the dict that `tree_to_dict` returns, validating every record.

    Args:
        data: the parsed JSON object.
        source: name of the input in error messages, such as the file path.
        max_depth: the deepest level below the root accepted; deeper input is rejected.
            The default, 100,000, is far above any search depth the library runs.

    Returns:
        The root node. Its descendants are attached in the stored order.

    Raises:
        ValueError: the data is not a tree in this layout: a wrong header, a missing key,
            a wrong type, a non-finite number, a duplicate node_id, a parent that is not an
            earlier record, a second root, a depth that is not the parent's depth + 1, or
            a tree deeper than `max_depth`. The message names the node and the key.
    """
    _check_count("max_depth", max_depth, 0, allow_none=False)

    # 1. The header.
    if not isinstance(data, dict):
        raise _invalid(source, f"the top level is a {type(data).__name__}, not an object")
    for key in ("format", "version", "nodes"):
        if key not in data:
            raise _invalid(source, f"top-level key {key!r} missing")
    if data["format"] != TREE_FORMAT:
        raise _invalid(source, f"'format' is {data['format']!r}, expected {TREE_FORMAT!r}")
    if data["version"] != TREE_FORMAT_VERSION:
        raise ValueError(
            f"{source} has tree format version {data['version']!r}, but this version of "
            f"tempo_search reads version {TREE_FORMAT_VERSION} only; save the tree again with "
            f"this version or load it with the version that wrote it"
        )
    records = data["nodes"]
    if not isinstance(records, list) or not records:
        raise _invalid(source, "'nodes' must be a non-empty list of node objects")

    # 2. The records, each checked before it becomes a node. Parents come before children.
    nodes: dict[int, SearchNode] = {}
    children_of: dict[int, list[SearchNode]] = {}
    order: list[SearchNode] = []
    root_depth = 0
    for index, record in enumerate(records):
        _check_record(record, index, source)
        node_id = record["node_id"]
        where = f"node {node_id} (nodes[{index}])"
        if node_id in nodes:
            raise _invalid(source, f"node_id {node_id} appears twice, again at nodes[{index}]")
        parent_id = record["parent_id"]
        if index == 0:
            if parent_id is not None:
                raise _invalid(
                    source, f"the first record, {where}, must be the root (parent_id null)"
                )
            root_depth = record["depth"]
        elif parent_id is None:
            raise _invalid(source, f"{where} is a second root (parent_id null)")
        elif parent_id not in nodes:
            raise _invalid(
                source, f"parent_id {parent_id} of {where} is not the node_id of an earlier record"
            )
        else:
            expected_depth = nodes[parent_id].depth + 1
            if record["depth"] != expected_depth:
                raise _invalid(
                    source,
                    f"key 'depth' at {where} is {record['depth']}, expected {expected_depth} "
                    f"(its parent's depth + 1)",
                )
            if record["depth"] - root_depth > max_depth:
                raise _invalid(
                    source, f"{where} is more than max_depth={max_depth} levels below the root"
                )

        node = SearchNode(**{key: record[key] for key in _NODE_KEYS if key != "parent_id"})
        nodes[node_id] = node
        order.append(node)
        if parent_id is not None:
            children_of.setdefault(parent_id, []).append(node)

    # 3. Attach children, deepest parents first. A parent is still detached when its
    # children are attached, so anytree's cycle check costs O(1) and a long chain loads in
    # linear time (top-down attachment would walk the whole chain for every node).
    for node in reversed(order):
        children = children_of.get(node.node_id)
        if children:
            node.children = children
    return order[0]


def load_tree_json(path: str | Path, *, max_depth: int = DEFAULT_MAX_LOAD_DEPTH) -> SearchNode:
    """Read a tree written by `save_tree_json` and return its root.

    The file is parsed as JSON only (never unpickled) and validated as in `tree_from_dict`,
    which documents `max_depth`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not valid JSON or not a tree in this layout; the message
            names the file, the node and the key.
    """
    source = str(path)
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except _TreeFileError as error:
        raise _invalid(source, str(error)) from None
    except json.JSONDecodeError as error:
        raise _invalid(source, f"invalid JSON ({error})") from None
    except RecursionError:
        raise _invalid(source, "the JSON nests too deeply") from None
    return tree_from_dict(data, source=source, max_depth=max_depth)


# ----------------------------------------------------------------------------------------
# Graphviz DOT export


def _dot_string(text: str) -> str:
    """Return `text` as a double-quoted DOT string that displays it literally."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r", "\\r").replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_label(node: SearchNode) -> str:
    token = "<root>" if node.is_root else _visible_text(node.text)
    stats = f"N={node.visit_count} Q={node.q_value:.3f} P={node.prior:.3f}"
    # In a DOT label, the two characters backslash-n end a line. `_dot_string` doubles the
    # backslashes that `_visible_text` wrote, so a token's own "\n" stays visible as text.
    label = _dot_string(token + "\n" + stats)
    return label


def _dot_node_name(node_id: int) -> str:
    # An unquoted DOT ID cannot contain "-", and the search tree's root has node_id -1.
    name = f"n{node_id}"
    return name if node_id >= 0 else f'"{name}"'


def tree_to_dot(root: SearchNode, *, max_nodes: int = 500) -> str:
    """Return the tree under `root` as a Graphviz DOT digraph.

    Args:
        root: the node to draw from.
        max_nodes: maximum number of nodes drawn. A larger tree is cut to a connected
            subtree grown from `root` by always adding the most visited node next to it, and
            the graph label states how many nodes were left out. The default of 500 keeps `dot` layouts
            readable and fast.

    Node names are `n<node_id>`. Terminal nodes have a double border; pruned nodes are
    dashed.
    """
    if not isinstance(root, SearchNode):
        raise TypeError(f"root must be a SearchNode, got {type(root).__name__}")
    _check_count("max_nodes", max_nodes, 1, allow_none=False)

    # 1. Choose the nodes: best-first from the root by visit count.
    chosen: list[SearchNode] = []
    frontier: list[tuple[tuple[int, float, int], int, SearchNode]] = []
    counter = 0  # tie-breaker, so the heap never compares nodes
    heapq.heappush(frontier, (_visit_order_key(root), counter, root))
    while frontier and len(chosen) < max_nodes:
        _, _, node = heapq.heappop(frontier)
        chosen.append(node)
        for child in node.children:
            counter += 1
            heapq.heappush(frontier, (_visit_order_key(child), counter, child))
    chosen_ids = {id(node) for node in chosen}
    left_out = sum(1 for _ in iter_nodes(root)) - len(chosen)

    # 2. Write nodes in pre-order, then edges.
    lines = ["digraph search_tree {", '  node [shape=box, fontname="monospace"];']
    if left_out:
        lines.append(f"  label={_dot_string(f'{left_out} more nodes not shown')};")
    drawn = [node for node in iter_nodes(root) if id(node) in chosen_ids]
    for node in drawn:
        attributes = [f"label={_dot_label(node)}"]
        if node.is_terminal:
            attributes.append("peripheries=2")
        if node.pruned:
            attributes.append("style=dashed")
        lines.append(f"  {_dot_node_name(node.node_id)} [{', '.join(attributes)}];")
    for node in drawn:
        if node is not root:
            parent, child = _dot_node_name(node.parent.node_id), _dot_node_name(node.node_id)
            lines.append(f"  {parent} -> {child};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_SAVE_SUFFIXES = (".json", ".dot", ".gv")


def save_tree(root: SearchNode, path: str | Path, *, max_nodes: int = 500) -> None:
    """Write the tree under `root` to `path`, as JSON or Graphviz DOT by the file suffix.

    `.json` writes `save_tree_json`'s layout; `.dot` and `.gv` write `tree_to_dot(root,
    max_nodes=max_nodes)`. `max_nodes` applies to DOT only.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        save_tree_json(root, path)
    elif suffix in (".dot", ".gv"):
        Path(path).write_text(tree_to_dot(root, max_nodes=max_nodes), encoding="utf-8")
    else:
        raise ValueError(
            f"path {str(path)!r} has the suffix {suffix!r}, which save_tree cannot write; "
            f"use one of {', '.join(_SAVE_SUFFIXES)}"
        )
