"""The puzzle benchmarks (`benchmarks.tasks`) on a tiny model with a minimal budget."""

from __future__ import annotations

import json

import pytest

from benchmarks import tasks as bench
from tempo_search.tasks.countdown import solve_countdown
from tempo_search.tasks.game24 import Game24Task, all_game24_puzzles
from tempo_search.testing import tiny_model

SIMULATIONS = 4
MAX_NEW_TOKENS = 16


@pytest.fixture(scope="module")
def model():
    loaded = tiny_model("llama")
    # The puzzle prompts (format and worked example) are longer than the tiny config's 256
    # positions; rotary positions have no built-in limit (as in tests/test_runners.py).
    loaded.model.config.max_position_embeddings = 1024
    return loaded


@pytest.fixture(scope="module")
def record(model):
    return bench.run(
        model,
        puzzles=2,
        simulations=SIMULATIONS,
        max_new_tokens=MAX_NEW_TOKENS,
        num_samples=3,
        blocksworld_priors=("lm", "uniform"),
        blocksworld_limit=2,
        no_rollout_puzzles=1,
        countdown_puzzles=1,
    )


def test_game24_sample_is_seeded_and_solvable():
    solvable = {tuple(p.numbers) for p in all_game24_puzzles() if p.solvable}
    first = bench.game24_sample(10, seed=0)
    assert first == bench.game24_sample(10, seed=0)
    assert set(first) <= solvable
    assert len(set(first)) == 10


def test_game24_sample_rejects_bad_count():
    with pytest.raises(ValueError, match="count=0"):
        bench.game24_sample(0)


def test_countdown_sample_is_seeded():
    assert bench.countdown_sample(3, seed=1) == bench.countdown_sample(3, seed=1)


def test_countdown_sample_is_solvable():
    puzzles = bench.countdown_sample(3)
    assert [solve_countdown(numbers, target) is not None for numbers, target in puzzles] == [
        True
    ] * 3


def test_countdown_sample_deals_tv_cards():
    for numbers, target in bench.countdown_sample(5):
        assert len(numbers) == 6
        assert 101 <= target <= 999
        small = [n for n in numbers if n not in bench.COUNTDOWN_LARGE]
        assert all(small.count(n) <= 2 and 1 <= n <= 10 for n in small)


def test_countdown_sample_rejects_zero():
    with pytest.raises(ValueError, match="count=0"):
        bench.countdown_sample(0)


def test_best_of_n_spends_the_forward_budget(model):
    result = bench.best_of_n(
        model, Game24Task((4, 9, 10, 13)), num_samples=3, forward_budget=6, max_new_tokens=4
    )
    # A random tiny model does not solve the puzzle, so it uses the whole budget. With 4 new
    # tokens per sample and 5 sampling forwards, at least one sample finishes.
    assert not result.solved
    assert result.forward_passes == 6
    assert result.samples >= 1


def test_best_of_n_spends_the_token_budget(model):
    result = bench.best_of_n(
        model, Game24Task((4, 9, 10, 13)), num_samples=3, token_budget=10, max_new_tokens=4
    )
    # Rows of 3 tokens per forward: the fourth forward passes the budget of 10.
    assert result.tokens_forwarded == 12


def test_best_of_n_rejects_bad_budget(model):
    with pytest.raises(ValueError, match="forward_budget=0"):
        bench.best_of_n(model, Game24Task((4, 9, 10, 13)), forward_budget=0)


def test_best_of_n_needs_a_budget(model):
    with pytest.raises(ValueError, match="needs a budget"):
        bench.best_of_n(model, Game24Task((4, 9, 10, 13)))


def test_run_game24_rows_have_every_method(record):
    rows = record["game24"]["rows"]
    assert all(set(bench.METHODS) <= set(row) for row in rows[:1])


def test_run_no_rollout_search_first_puzzle(record):
    rows = record["game24"]["rows"]
    assert ["search_lm_no_rollout" in row for row in rows] == [True, False]


def test_run_best_of_n_stops_near_search_tokens(record):
    # Sampling stops once it has forwarded the LM-prior search's tokens (one step of 3 rows
    # at most past them), or earlier when it solves.
    for row in record["game24"]["rows"]:
        limit = max(1, row["search_lm"]["tokens_forwarded"]) + 3
        assert row["best_of_n"]["tokens_forwarded"] <= limit


def test_run_search_uses_moves(record):
    assert record["budget"]["actions"] == "moves"


def test_run_summary_counts(record):
    summary = record["game24"]["summary"]
    rows = record["game24"]["rows"]
    for method in bench.METHODS:
        cells = [row[method] for row in rows if method in row]
        solved = sum(cell["solved"] for cell in cells)
        assert summary[method]["solved"] == solved
        assert summary[method]["solve_rate"] == solved / len(cells)


def test_run_goal_flag(record):
    rate = record["game24"]["summary"]["search_lm"]["solve_rate"]
    assert record["game24"]["goal_met"] == (rate >= bench.GAME24_GOAL)


def test_run_blocksworld_summary_by_length(record):
    rows = record["blocksworld"]["rows"]
    summary = record["blocksworld"]["summary"]
    assert set(summary) == {"lm", "uniform"}
    lengths = {str(row["optimal_length"]) for row in rows}
    assert set(summary["lm"]) == lengths
    assert sum(cell["instances"] for cell in summary["lm"].values()) == len(rows)


def test_run_countdown_rows_have_both_priors(record):
    (row,) = record["countdown"]["rows"]
    assert set(row) == {"numbers", "target", *bench.COUNTDOWN_PRIORS}


def test_run_countdown_summary_counts(record):
    rows = record["countdown"]["rows"]
    summary = record["countdown"]["summary"]
    for prior in bench.COUNTDOWN_PRIORS:
        assert summary[prior]["solved"] == sum(row[prior]["solved"] for row in rows)


def test_run_countdown_uniform_forwards_nothing(record):
    (row,) = record["countdown"]["rows"]
    assert row["uniform"]["tokens_forwarded"] == 0


def test_run_without_countdown_has_no_rows(model):
    record = bench.run(
        model,
        puzzles=1,
        simulations=1,
        max_new_tokens=MAX_NEW_TOKENS,
        num_samples=1,
        blocksworld_limit=1,
        no_rollout_puzzles=0,
    )
    assert record["countdown"]["rows"] == []


def test_run_rejects_negative_countdown(model):
    with pytest.raises(ValueError, match="countdown_puzzles=-1 is invalid"):
        bench.run(model, puzzles=1, simulations=1, countdown_puzzles=-1)


def test_main_rejects_negative_countdown(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--countdown", "-1"])
    assert exit_info.value.code == 2
    assert "--countdown -1 is invalid" in capsys.readouterr().err


def test_markdown_countdown_table(record):
    text = bench.markdown_blocks(record)["tasks.countdown"]
    assert "Countdown, 1 solvable six-number puzzles" in text


def test_run_record_is_json(record):
    assert json.loads(json.dumps(record))["budget"]["num_simulations"] == SIMULATIONS


def test_markdown_tables_have_a_row_per_method(record):
    text = bench.markdown_tables(record)
    assert "Game of 24, 2 solvable puzzles" in text
    assert text.count("| move search, LM prior |") == 1
    assert "| best-of-N masked sampling (3 at a time), same tokens |" in text


def test_run_game24_stops_at_deadline(model):
    rows = bench.run_game24(
        model,
        [(4, 9, 10, 13)],
        {"num_simulations": 1, "batch_size": 1, "max_new_tokens": 4, "seed": 0},
        deadline=0.0,
    )
    assert rows == []
