import json
import logging
import math

import pytest
import torch
from joblib.externals.loky import get_reusable_executor

import benchmarks.keywords as keywords_module
from benchmarks.keywords import (
    MCTS_ROOT_WIDENING,
    MCTS_VALUE,
    MCTS_WIDENING,
    METHODS,
    build_prompt,
    format_paired_table,
    format_table,
    goal_met,
    load_keyword_sets,
    mcts_forwards,
    merge_sections,
    paired_perplexities,
    run_keywords,
    run_sampling,
)
from tempo_search.metrics import keyword_coverage
from tempo_search.models import load_model
from tempo_search.testing import tiny_model


@pytest.fixture(scope="module")
def section():
    torch.set_num_threads(1)
    return run_keywords(tiny_model("llama"), num_sets=2, simulations=4, max_new_tokens=4)


def _summary(coverage_share: float, perplexity: float) -> dict:
    return {
        "summary": {
            "keyword_coverage_mean": coverage_share,
            "full_coverage_share": coverage_share,
            "perplexity_mean": perplexity,
            "perplexity_missing": 0,
            "forward_passes_mean": 4.0,
        },
        "sets": [],
    }


def test_run_keywords_has_every_method(section):
    assert list(section["methods"]) == list(METHODS)


def test_run_keywords_counts_sets(section):
    assert section["settings"]["num_sets_done"] == 2
    for method in section["methods"].values():
        assert len(method["sets"]) == 2


def test_run_keywords_records_value_weights(section):
    assert section["settings"]["mcts_value_weights"] == {
        "likelihood": MCTS_VALUE.likelihood,
        "coherence": MCTS_VALUE.coherence,
        "reward": MCTS_VALUE.reward,
    }


@pytest.fixture
def mcts_kwargs(monkeypatch) -> dict:
    """Return the keyword arguments of the `search` call that `run_mcts` makes."""
    captured = {}
    original = keywords_module.search

    def spy(*args, **kwargs):
        captured.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(keywords_module, "search", spy)
    keywords_module.run_mcts(
        tiny_model("llama"), "Write:", ["cat"], simulations=2, max_new_tokens=2, seed=0
    )
    return captured


def test_run_mcts_passes_value_weights(mcts_kwargs):
    assert mcts_kwargs["value"] == MCTS_VALUE


def test_run_mcts_passes_widening(mcts_kwargs):
    assert mcts_kwargs["widening"] == MCTS_WIDENING


def test_run_mcts_passes_root_widening(mcts_kwargs):
    assert mcts_kwargs["root_widening"] == MCTS_ROOT_WIDENING


def test_run_keywords_records_widening(section):
    assert section["settings"]["mcts_widening"]["p3"] == MCTS_WIDENING.p3


def test_run_keywords_records_root_widening(section):
    assert section["settings"]["mcts_root_widening"]["p3"] == MCTS_ROOT_WIDENING.p3


def test_run_keywords_coverage_matches_metric(section):
    sets = load_keyword_sets(2)
    for method in section["methods"].values():
        for entry, row in zip(sets, method["sets"], strict=True):
            assert row["set_id"] == entry["id"]
            assert row["coverage"] == keyword_coverage(row["text"], entry["words"])


def test_run_keywords_summary_from_rows(section):
    for method in section["methods"].values():
        rows, summary = method["sets"], method["summary"]
        coverages = [row["coverage"] for row in rows]
        assert summary["keyword_coverage_mean"] == pytest.approx(sum(coverages) / len(rows))
        assert summary["full_coverage_share"] == sum(c == 1.0 for c in coverages) / len(rows)
        forwards = [row["forward_passes"] for row in rows]
        assert summary["forward_passes_mean"] == pytest.approx(sum(forwards) / len(rows))


def test_mcts_forwards_four_rows_each():
    # The prefill, then 3 calls of 1 token, 2 of 4, one of 5 (2 forwards) and one of 9 (3).
    assert mcts_forwards({1: 3, 4: 2, 5: 1, 9: 1}) == 1 + 3 + 2 + 2 + 3


def test_mcts_forwards_not_below_calls(section):
    for row in section["methods"]["MCTS"]["sets"]:
        assert row["forward_passes"] >= row["model_calls"]


def test_run_keywords_perplexity_finite_or_none(section):
    for method in section["methods"].values():
        for row in method["sets"]:
            assert row["perplexity"] is None or (
                math.isfinite(row["perplexity"]) and row["perplexity"] >= 1.0
            )


def test_run_sampling_spends_budget_exactly():
    # The tiny model does not write this word, so sampling runs until the budget is spent.
    # Batches after the first are cut to the forwards left, and each returns at least one token.
    result = run_sampling(
        tiny_model("llama"),
        [1, 2, 3],
        ["qqqqqqqqqq"],
        budget=10,
        max_new_tokens=4,
        seed=0,
    )

    assert result["forward_passes"] == 10
    assert result["samples"] >= 4 * 3


def test_goal_met_needs_full_coverage_and_lower_perplexity():
    methods = {
        "MCTS": _summary(1.0, 3.0),
        "sampling + rejection": _summary(0.5, 4.0),
        "beam search + rerank": _summary(1.0, 3.5),
    }
    assert goal_met({"methods": methods})
    assert not goal_met({"methods": {**methods, "MCTS": _summary(0.9, 3.0)}})
    assert not goal_met({"methods": {**methods, "MCTS": _summary(1.0, 3.6)}})


def test_format_table_one_row_per_method(section):
    lines = format_table(section).splitlines()
    assert len(lines) == 2 + len(METHODS)


def test_format_table_repeated_four_grams():
    # "a b c d a b c d" has 5 four-grams and one of them repeats, so 20 %. The other text
    # repeats none, so the mean is 10 %.
    method = _summary(1.0, 2.0)
    method["sets"] = [{"text": "a b c d a b c d"}, {"text": "a b c d e"}]
    row = format_table({"methods": {"MCTS": method}}).splitlines()[2]
    assert row.endswith("| 10.0 % |")


def test_main_table_prints_saved_record(section, tmp_path, capsys):
    path = tmp_path / "keywords-1.json"
    path.write_text(json.dumps({"benchmark": "keywords", **section}), encoding="utf-8")
    assert keywords_module.main(["--table", str(path)]) == 0
    assert format_table(section) in capsys.readouterr().out


def test_main_table_rejects_other_record(tmp_path, capsys):
    path = tmp_path / "tasks-1.json"
    path.write_text(json.dumps({"benchmark": "tasks"}), encoding="utf-8")
    assert keywords_module.main(["--table", str(path)]) == 2
    assert f"--table {str(path)!r} is not a keywords record" in capsys.readouterr().err


def test_main_table_rejects_missing_file(tmp_path, capsys):
    path = tmp_path / "absent.json"
    assert keywords_module.main(["--table", str(path)]) == 2
    assert "failed to read a JSON record" in capsys.readouterr().err


def test_main_negative_skip_exits_2(capsys):
    assert keywords_module.main(["--skip", "-1"]) == 2
    assert "skip=-1 must be an int >= 0" in capsys.readouterr().err


def test_main_skip_past_last_set_exits_2(capsys):
    assert keywords_module.main(["--skip", "99", "--sets", "2"]) == 2
    assert "skip=99 with num_sets=2 reaches past the 100" in capsys.readouterr().err


@pytest.fixture(scope="module")
def later_set():
    """The second keyword set alone, run with `skip=1` and the `section` fixture's options."""
    return run_keywords(tiny_model("llama"), num_sets=1, skip=1, simulations=4, max_new_tokens=4)


@pytest.fixture(scope="module")
def first_set():
    return run_keywords(tiny_model("llama"), num_sets=1, simulations=4, max_new_tokens=4)


def test_run_keywords_skip_starts_at_later_set(later_set):
    assert [row["set_id"] for row in later_set["methods"]["MCTS"]["sets"]] == ["kw-002"]


def test_run_keywords_skip_matches_longer_run(section, later_set):
    for name in METHODS:
        assert (
            later_set["methods"][name]["sets"][0]["text"]
            == (section["methods"][name]["sets"][1]["text"])
        )


def test_run_keywords_skip_past_last_set_raises():
    with pytest.raises(ValueError, match="skip=99 with num_sets=2 reaches past the 100"):
        run_keywords(tiny_model("llama"), num_sets=2, skip=99, simulations=1)


def test_run_keywords_negative_skip_raises():
    with pytest.raises(ValueError, match="skip=-1 must be an int >= 0"):
        run_keywords(tiny_model("llama"), num_sets=1, skip=-1, simulations=1)


def test_merge_sections_orders_rows_by_set(first_set, later_set):
    merged = merge_sections([later_set, first_set])
    assert [row["set_id"] for row in merged["methods"]["MCTS"]["sets"]] == ["kw-001", "kw-002"]


def test_merge_sections_matches_one_run(section, first_set, later_set):
    merged = merge_sections([first_set, later_set])
    for name in METHODS:
        assert merged["methods"][name]["summary"] == section["methods"][name]["summary"]


def test_merge_sections_counts_sets_done(first_set, later_set):
    assert merge_sections([first_set, later_set])["settings"]["num_sets_done"] == 2


def test_merge_sections_rejects_other_settings(first_set, later_set):
    other = {**later_set, "settings": {**later_set["settings"], "mcts_simulations": 5}}
    with pytest.raises(ValueError, match=r"record 2 ran with other settings .*mcts_simulations"):
        merge_sections([first_set, other])


def test_merge_sections_rejects_shared_set(first_set):
    with pytest.raises(ValueError, match="sets kw-001 appear in more than one record"):
        merge_sections([first_set, first_set])


def test_main_table_merges_records(section, first_set, later_set, tmp_path, capsys):
    paths = []
    for number, part in enumerate((first_set, later_set)):
        path = tmp_path / f"keywords-{number}.json"
        path.write_text(json.dumps({"benchmark": "keywords", **part}), encoding="utf-8")
        paths.append(str(path))
    assert keywords_module.main(["--table", *paths]) == 0
    assert format_table(section) in capsys.readouterr().out


def test_build_prompt_lists_words():
    assert build_prompt(["a", "b"]) == "Write one sentence that uses all of these words: a, b."


def test_load_keyword_sets_rejects_zero():
    with pytest.raises(ValueError, match="count=0"):
        load_keyword_sets(0)


def _rows(*triples: tuple[str, float, float | None]) -> list[dict]:
    return [{"set_id": i, "coverage": c, "perplexity": p} for i, c, p in triples]


@pytest.fixture
def paired_section() -> dict:
    return {
        "methods": {
            "MCTS": {"sets": _rows(("a", 1.0, 2.0), ("b", 1.0, 3.0), ("c", 1.0, 4.0))},
            "beam search + rerank": {
                "sets": _rows(("a", 1.0, 2.5), ("b", 0.5, 1.5), ("c", 1.0, 3.5))
            },
        }
    }


def test_paired_perplexities_counts_sets_both_cover(paired_section):
    assert paired_perplexities(paired_section)["beam search + rerank"]["sets"] == 2


def test_paired_perplexities_mcts_mean_on_shared_sets(paired_section):
    assert paired_perplexities(paired_section)["beam search + rerank"]["mcts"] == 3.0


def test_paired_perplexities_baseline_mean_on_shared_sets(paired_section):
    assert paired_perplexities(paired_section)["beam search + rerank"]["baseline"] == 3.0


def test_paired_perplexities_skips_set_mcts_misses(paired_section):
    paired_section["methods"]["MCTS"]["sets"][0]["coverage"] = 0.75
    assert paired_perplexities(paired_section)["beam search + rerank"]["sets"] == 1


def test_paired_perplexities_no_shared_set_gives_none(paired_section):
    for row in paired_section["methods"]["beam search + rerank"]["sets"]:
        row["coverage"] = 0.5
    assert paired_perplexities(paired_section)["beam search + rerank"]["mcts"] is None


def test_format_paired_table_one_row_per_baseline(section):
    lines = format_paired_table(section).splitlines()
    assert len(lines) == 2 + len(METHODS) - 1


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny Llama saved as a model folder, for the worker processes of `jobs=2`."""
    folder = tmp_path_factory.mktemp("tiny-llama-keywords")
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return loaded, str(folder)


def test_run_keywords_jobs_match_one_process(saved_model):
    loaded, folder = saved_model
    options = {"num_sets": 2, "simulations": 4, "max_new_tokens": 4}
    serial = run_keywords(load_model(folder), **options)
    parallel = run_keywords(loaded, jobs=2, model_arg=folder, **options)
    for name in METHODS:
        texts = [row["text"] for row in parallel["methods"][name]["sets"]]
        assert texts == [row["text"] for row in serial["methods"][name]["sets"]]
    assert parallel["settings"]["num_sets_done"] == 2


def test_run_keywords_jobs_log_each_set(saved_model, caplog, capfd):
    # Fresh workers, so that their stderr is this test's captured one.
    get_reusable_executor().shutdown(wait=True)
    loaded, folder = saved_model
    caplog.set_level(logging.INFO, logger="benchmarks.keywords")
    run_keywords(loaded, num_sets=2, simulations=2, max_new_tokens=2, jobs=2, model_arg=folder)
    err = capfd.readouterr().err
    for set_id in ("kw-001", "kw-002"):
        assert f"{set_id}: MCTS" in err
