import json
import re

import pytest

from tempo_search.tree import (
    SearchNode,
    iter_nodes,
    load_tree_json,
    render_tree,
    save_tree,
    save_tree_json,
    tree_from_dict,
    tree_to_dict,
    tree_to_dot,
    visit_distribution,
)


def make_tree() -> dict[str, SearchNode]:
    """Build a small tree by hand.

    root
    ├── " cat" (N=5, value_sum=3.0)
    │   ├── " sat" (N=4)
    │   │   └── "." (N=1, pruned)
    │   └── " ran" (N=0)
    └── "\\n" (N=2, terminal)
    """
    root = SearchNode(node_id=0, visit_count=8, value_sum=4.0)
    cat = SearchNode(
        node_id=1,
        token_id=11,
        text=" cat",
        prior=0.6,
        log_prob=-0.51,
        parent=root,
        visit_count=5,
        value_sum=3.0,
        is_expanded=True,
        slot=3,
    )
    newline = SearchNode(
        node_id=2,
        token_id=12,
        text="\n",
        prior=0.3,
        parent=root,
        visit_count=2,
        value_sum=1.0,
        is_terminal=True,
        reward=0.5,
    )
    sat = SearchNode(
        node_id=3, token_id=13, text=" sat", prior=0.7, parent=cat, visit_count=4, value_sum=2.0
    )
    ran = SearchNode(node_id=4, token_id=14, text=" ran", prior=0.2, parent=cat)
    dot = SearchNode(
        node_id=5,
        token_id=15,
        text=".",
        prior=0.9,
        parent=sat,
        visit_count=1,
        value_sum=0.25,
        pruned=True,
        coherence=0.8,
        value=0.25,
    )
    return {"root": root, "cat": cat, "newline": newline, "sat": sat, "ran": ran, "dot": dot}


def make_chain(length: int) -> SearchNode:
    """Build a root with a chain of `length` nodes below it, attached bottom-up.

    Attaching the deepest node first keeps anytree's cycle check O(1) per node.
    """
    nodes = [SearchNode(node_id=0)]
    for index in range(1, length + 1):
        nodes.append(SearchNode(node_id=index, token_id=index, text="a", depth=index))
    for index in range(length, 0, -1):
        nodes[index].parent = nodes[index - 1]
    return nodes[0]


def unescape_dot(label: str) -> list[str]:
    """Split a DOT label body into displayed lines (handles \\\\, \\" and \\n only)."""
    lines, current, index = [], [], 0
    while index < len(label):
        char = label[index]
        if char == "\\":
            following = label[index + 1]
            if following == "n":
                lines.append("".join(current))
                current = []
            else:
                current.append(following)
            index += 2
        else:
            current.append(char)
            index += 1
    lines.append("".join(current))
    return lines


# ----------------------------------------------------------------------------------------
# SearchNode


def test_search_node_depth_from_parent():
    nodes = make_tree()
    assert nodes["root"].depth == 0
    assert nodes["cat"].depth == 1
    assert nodes["dot"].depth == 3


def test_search_node_q_value_unvisited_is_zero():
    nodes = make_tree()
    assert nodes["ran"].q_value == 0.0


def test_search_node_q_value_is_mean():
    nodes = make_tree()
    assert nodes["cat"].q_value == pytest.approx(3.0 / 5)


def test_search_node_path_root_to_node():
    nodes = make_tree()
    assert nodes["dot"].path() == [nodes["root"], nodes["cat"], nodes["sat"], nodes["dot"]]


def test_search_node_ancestors_excludes_self():
    nodes = make_tree()
    assert nodes["sat"].ancestors == (nodes["root"], nodes["cat"])


def test_search_node_token_ids_excludes_root():
    nodes = make_tree()
    assert nodes["dot"].token_ids() == [11, 13, 15]


def test_search_node_path_text():
    nodes = make_tree()
    assert nodes["dot"].path_text() == " cat sat."


def test_search_node_root_path_text_empty():
    nodes = make_tree()
    assert nodes["root"].path_text() == ""
    assert nodes["root"].token_ids() == []


def test_search_node_children_in_insertion_order():
    nodes = make_tree()
    assert nodes["cat"].children == (nodes["sat"], nodes["ran"])


def test_search_node_has_no_instance_dict_for_fields():
    # The fields live in __slots__; only anytree's private links use the instance dict.
    node = SearchNode(node_id=0)
    assert "visit_count" not in vars(node)


def test_iter_nodes_preorder():
    nodes = make_tree()
    order = [node.node_id for node in iter_nodes(nodes["root"])]
    assert order == [0, 1, 3, 5, 4, 2]


# ----------------------------------------------------------------------------------------
# render_tree


def test_render_tree_full():
    nodes = make_tree()
    expected = "\n".join(
        [
            "<root> N=8 Q=0.500 P=1.000",
            "├── '␣cat' N=5 Q=0.600 P=0.600",
            "│   ├── '␣sat' N=4 Q=0.500 P=0.700",
            "│   │   └── '.' N=1 Q=0.250 P=0.900 pruned",
            "│   └── '␣ran' N=0 Q=0.000 P=0.200",
            "└── '\\n' N=2 Q=0.500 P=0.300 terminal",
        ]
    )
    assert render_tree(nodes["root"]) == expected


def test_render_tree_most_visited_first():
    nodes = make_tree()
    # Give the second child more visits; it must now be drawn first.
    nodes["newline"].visit_count = 9
    lines = render_tree(nodes["root"], max_depth=1).splitlines()
    assert lines[1].startswith("├── '\\n' N=9")
    assert lines[2].startswith("└── '␣cat' N=5")


def test_render_tree_max_depth():
    nodes = make_tree()
    lines = render_tree(nodes["root"], max_depth=1).splitlines()
    assert len(lines) == 3


def test_render_tree_max_depth_zero_is_root_only():
    nodes = make_tree()
    assert render_tree(nodes["root"], max_depth=0) == "<root> N=8 Q=0.500 P=1.000"


def test_render_tree_max_children_summary_line():
    nodes = make_tree()
    lines = render_tree(nodes["root"], max_children=1).splitlines()
    assert "│   └── … 1 more N=0" in lines
    assert lines[-1] == "└── … 1 more N=2"


def test_render_tree_min_visits_hides_children():
    nodes = make_tree()
    text = render_tree(nodes["root"], min_visits=2)
    assert "'␣ran'" not in text
    assert "'.'" not in text
    assert "'␣sat'" in text


def test_render_tree_escapes_control_characters():
    root = SearchNode(node_id=0)
    SearchNode(node_id=1, token_id=1, text="a\tb\\c\x00", parent=root)
    line = render_tree(root).splitlines()[1]
    assert line.startswith("└── 'a\\tb\\\\c\\x00'")


def test_render_tree_rejects_negative_min_visits():
    with pytest.raises(ValueError, match="min_visits"):
        render_tree(SearchNode(node_id=0), min_visits=-1)


def test_render_tree_rejects_non_node():
    with pytest.raises(TypeError, match="root must be a SearchNode"):
        render_tree("root")


def test_render_tree_deep_chain():
    root = make_chain(2_000)
    lines = render_tree(root).splitlines()
    assert len(lines) == 2_001
    assert lines[-1].endswith("'a' N=0 Q=0.000 P=1.000")


# ----------------------------------------------------------------------------------------
# visit_distribution


def test_visit_distribution_shares():
    nodes = make_tree()
    shares = visit_distribution(nodes["root"])
    assert [share.token_id for share in shares] == [11, 12]
    assert shares[0].share == pytest.approx(5 / 7)
    assert shares[1].share == pytest.approx(2 / 7)
    assert shares[0].text == " cat"
    assert shares[0].q_value == pytest.approx(0.6)


def test_visit_distribution_leaf_is_empty():
    nodes = make_tree()
    assert visit_distribution(nodes["ran"]) == []


def test_visit_distribution_unvisited_shares_zero():
    root = SearchNode(node_id=0)
    SearchNode(node_id=1, token_id=1, parent=root)
    assert visit_distribution(root)[0].share == 0.0


# ----------------------------------------------------------------------------------------
# JSON export and import


def test_tree_to_dict_header_and_order():
    nodes = make_tree()
    data = tree_to_dict(nodes["root"])
    assert data["format"] == "tempo_search.tree"
    assert data["version"] == 1
    assert [record["node_id"] for record in data["nodes"]] == [0, 1, 3, 5, 4, 2]
    assert [record["parent_id"] for record in data["nodes"]] == [None, 0, 1, 3, 1, 0]


def test_tree_to_dict_subtree_root_has_no_parent():
    nodes = make_tree()
    data = tree_to_dict(nodes["cat"])
    assert data["nodes"][0]["parent_id"] is None
    assert len(data["nodes"]) == 4


def test_save_load_json_round_trip(tmp_path):
    nodes = make_tree()
    path = tmp_path / "tree.json"
    save_tree_json(nodes["root"], path)
    loaded = load_tree_json(path)
    assert tree_to_dict(loaded) == tree_to_dict(nodes["root"])


def test_load_tree_json_restores_links(tmp_path):
    nodes = make_tree()
    path = tmp_path / "tree.json"
    save_tree_json(nodes["root"], path)
    loaded = load_tree_json(path)
    dot = loaded.children[0].children[0].children[0]
    assert dot.path_text() == " cat sat."
    assert dot.coherence == pytest.approx(0.8)
    assert loaded.children[1].reward == pytest.approx(0.5)


def test_save_tree_json_rejects_nan(tmp_path):
    nodes = make_tree()
    nodes["sat"].value = float("nan")
    with pytest.raises(ValueError, match="value=nan at node 3"):
        save_tree_json(nodes["root"], tmp_path / "tree.json")


def test_json_round_trip_deep_chain(tmp_path):
    root = make_chain(5_000)
    path = tmp_path / "deep.json"
    save_tree_json(root, path)
    loaded = load_tree_json(path)
    leaf = loaded
    while leaf.children:
        leaf = leaf.children[0]
    assert leaf.depth == 5_000
    assert len(leaf.token_ids()) == 5_000


def write_json(tmp_path, data) -> str:
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def valid_data() -> dict:
    return tree_to_dict(make_tree()["root"])


def test_load_rejects_missing_key(tmp_path):
    data = valid_data()
    del data["nodes"][2]["visit_count"]
    with pytest.raises(ValueError, match=r"key 'visit_count' missing at node 3 \(nodes\[2\]\)"):
        load_tree_json(write_json(tmp_path, data))


def test_load_error_names_file(tmp_path):
    data = valid_data()
    del data["nodes"][2]["visit_count"]
    path = write_json(tmp_path, data)
    with pytest.raises(ValueError, match=re.escape(path)):
        load_tree_json(path)


def test_load_rejects_wrong_type(tmp_path):
    data = valid_data()
    data["nodes"][1]["prior"] = "high"
    with pytest.raises(ValueError, match=r"key 'prior' at node 1 .* must be a number"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_bool_as_int(tmp_path):
    data = valid_data()
    data["nodes"][1]["visit_count"] = True
    with pytest.raises(ValueError, match="key 'visit_count' at node 1"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_nan_literal(tmp_path):
    data = valid_data()
    data["nodes"][1]["value_sum"] = float("nan")
    # json.dumps writes the non-standard literal NaN by default.
    with pytest.raises(ValueError, match="non-finite number NaN"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_overflowing_number(tmp_path):
    path = tmp_path / "tree.json"
    text = json.dumps(valid_data()).replace('"log_prob": -0.51', '"log_prob": -1e999')
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"key 'log_prob' at node 1 .* finite"):
        load_tree_json(path)


def test_load_rejects_wrong_format(tmp_path):
    data = valid_data()
    data["format"] = "something.else"
    with pytest.raises(ValueError, match=r"'format' is 'something\.else'"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_other_version(tmp_path):
    data = valid_data()
    data["version"] = 2
    with pytest.raises(ValueError, match="version 2"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_top_level_list(tmp_path):
    with pytest.raises(ValueError, match="top level is a list"):
        load_tree_json(write_json(tmp_path, []))


def test_load_rejects_invalid_json(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_tree_json(path)


def test_load_rejects_second_root(tmp_path):
    data = valid_data()
    data["nodes"][3]["parent_id"] = None
    with pytest.raises(ValueError, match="second root"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_unknown_parent(tmp_path):
    data = valid_data()
    data["nodes"][3]["parent_id"] = 99
    with pytest.raises(ValueError, match="parent_id 99 of node 5"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_self_parent(tmp_path):
    data = valid_data()
    data["nodes"][3]["parent_id"] = data["nodes"][3]["node_id"]
    with pytest.raises(ValueError, match="not the node_id of an earlier record"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_duplicate_node_id(tmp_path):
    data = valid_data()
    data["nodes"][4]["node_id"] = 1
    with pytest.raises(ValueError, match="node_id 1 appears twice"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_inconsistent_depth(tmp_path):
    data = valid_data()
    data["nodes"][3]["depth"] = 7
    with pytest.raises(ValueError, match=r"key 'depth' at node 5 .* expected 3"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_depth_over_max(tmp_path):
    data = tree_to_dict(make_chain(20))
    with pytest.raises(ValueError, match="max_depth=10"):
        tree_from_dict(data, max_depth=10)


def test_load_rejects_negative_visit_count(tmp_path):
    data = valid_data()
    data["nodes"][1]["visit_count"] = -3
    with pytest.raises(ValueError, match="non-negative"):
        load_tree_json(write_json(tmp_path, data))


def test_load_rejects_empty_nodes(tmp_path):
    data = valid_data()
    data["nodes"] = []
    with pytest.raises(ValueError, match="non-empty list"):
        load_tree_json(write_json(tmp_path, data))


# ----------------------------------------------------------------------------------------
# DOT export and save_tree


def dot_labels(dot: str) -> dict[str, list[str]]:
    pattern = re.compile(r'^  (n\d+) \[label="((?:[^"\\]|\\.)*)"', re.MULTILINE)
    return {name: unescape_dot(body) for name, body in pattern.findall(dot)}


def test_tree_to_dot_nodes_and_edges():
    nodes = make_tree()
    dot = tree_to_dot(nodes["root"])
    assert dot.startswith("digraph search_tree {")
    assert set(dot_labels(dot)) == {"n0", "n1", "n2", "n3", "n4", "n5"}
    edges = set(re.findall(r"(n\d+) -> (n\d+);", dot))
    assert edges == {("n0", "n1"), ("n0", "n2"), ("n1", "n3"), ("n1", "n4"), ("n3", "n5")}


def test_tree_to_dot_escapes_quotes_and_backslashes():
    root = SearchNode(node_id=0)
    SearchNode(node_id=1, token_id=1, text=' "x\\', parent=root)
    labels = dot_labels(tree_to_dot(root))
    # The displayed label is the render_tree text of the token, then the statistics.
    assert labels["n1"] == ["'␣\"x\\\\'", "N=0 Q=0.000 P=1.000"]


def test_tree_to_dot_newline_token_shown_not_broken():
    nodes = make_tree()
    labels = dot_labels(tree_to_dot(nodes["root"]))
    assert labels["n2"] == ["'\\n'", "N=2 Q=0.500 P=0.300"]


def test_tree_to_dot_max_nodes_keeps_most_visited():
    nodes = make_tree()
    dot = tree_to_dot(nodes["root"], max_nodes=3)
    assert set(dot_labels(dot)) == {"n0", "n1", "n3"}
    assert 'label="3 more nodes not shown";' in dot


def test_tree_to_dot_marks_terminal_and_pruned():
    nodes = make_tree()
    dot = tree_to_dot(nodes["root"])
    assert re.search(r"^  n2 \[.*peripheries=2", dot, re.MULTILINE)
    assert re.search(r"^  n5 \[.*style=dashed", dot, re.MULTILINE)


def test_save_tree_by_suffix(tmp_path):
    nodes = make_tree()
    save_tree(nodes["root"], tmp_path / "tree.JSON")
    save_tree(nodes["root"], tmp_path / "tree.gv")
    assert load_tree_json(tmp_path / "tree.JSON").visit_count == 8
    assert (tmp_path / "tree.gv").read_text(encoding="utf-8").startswith("digraph")


def test_save_tree_rejects_unknown_suffix(tmp_path):
    nodes = make_tree()
    with pytest.raises(ValueError, match=r"suffix '\.png'.*\.json, \.dot, \.gv"):
        save_tree(nodes["root"], tmp_path / "tree.png")
