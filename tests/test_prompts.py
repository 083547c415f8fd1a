"""Tests for peftlab.prompts: template and verbalizer parsing, rendering, queries, truncation, demonstrations."""

from __future__ import annotations

from collections import Counter

import pytest

from peftlab.errors import PeftlabError
from peftlab.prompts import (
    Prompt,
    Template,
    Verbalizer,
    _word_with_space,
    pick_demonstrations,
    suggested_prompt,
    token_text,
    typed_example,
)

LABELS = ["negative", "positive"]
VERBALIZER = {"negative": ["bad", "terrible"], "positive": ["great", "fantastic"]}


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False).input_ids


def _prompt(template: str, verbalizer=VERBALIZER, fields=("text",), demonstrations=()) -> Prompt:
    return Prompt(Template.parse(template, list(fields)), Verbalizer.parse(verbalizer, LABELS), list(demonstrations))


def _as_tuples(queries) -> list[tuple]:
    return [(q.input_ids, q.read_positions, q.targets) for q in queries]


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    "text, found",
    [
        ("Review: {text} Sentiment:", "no \\{mask\\}"),
        ("Review: {text} {mask} Sentiment:{mask}", "2 \\{mask\\} slots"),
        ("{mask}{mask}{mask}", "3 \\{mask\\} slots"),
    ],
)
def test_template_needs_exactly_one_mask(text, found):
    with pytest.raises(PeftlabError, match=r"exactly one \{mask\}.*" + found):
        Template.parse(text, ["text"])


def test_template_unknown_column_is_named():
    with pytest.raises(PeftlabError, match=r"uses \{title\}, which the task lacks; available: \{text\}"):
        Template.parse("Title: {title}\nReview: {text}\nSentiment:{mask}", ["text"])
    with pytest.raises(PeftlabError, match=r"\{a\}, \{b\}"):
        Template.parse("{b} {a} {text}{mask}", ["text"])


@pytest.mark.parametrize("text", ["Sentiment:{mask}", "{ text} was{mask}."])
def test_a_template_that_never_uses_the_input_is_refused(text):
    """Without its input every text is scored the same: one prediction for all (a typo such as '{ text}' too)."""
    with pytest.raises(PeftlabError) as raised:
        Template.parse(text, ["text"])
    assert str(raised.value) == (
        "The template never uses the input; write {text} where the text goes, as in 'Review: {text} Sentiment:{mask}'."
    )
    with pytest.raises(PeftlabError, match=r"write \{premise\} or \{hypothesis\} where the text goes"):
        Template.parse(text, ["premise", "hypothesis"])


UNCLOSED = [("Review: {text Sentiment:{mask}", "text"), ("{text {mask}", "text"), ("{text} was{mask", "mask")]


@pytest.mark.parametrize(("text", "field"), UNCLOSED)
def test_a_field_without_its_closing_brace_is_named(text, field):
    """ "Review: {text Sentiment:{mask}" was told it never uses the input, which sent people looking elsewhere."""
    with pytest.raises(PeftlabError) as raised:
        Template.parse(text, ["text"])
    assert str(raised.value) == f"The template has '{{{field}' without its closing '}}'; write {{{field}}}."


@pytest.mark.parametrize(
    ("text", "doubled", "field"),
    [
        ("Just {{mask}}! {text}", "{{mask}}", "mask"),
        ("{{text}} It was{mask}.", "{{text}}", "text"),
        ("{{ text }} It was{mask}.", "{{ text }}", "text"),  # as Jinja and promptsource write a field
    ],
)
def test_a_field_in_doubled_braces_is_refused(text, doubled, field):
    """ "Just {{mask}}! {text}" (a Jinja habit, or Python's escape) was read as a mask between two literal braces:
    the model was asked for the word after "Just {", and its accuracy looked like the pattern's."""
    with pytest.raises(PeftlabError) as raised:
        Template.parse(text, ["text"])
    assert str(raised.value) == (
        f"The template has '{doubled}'; a field takes single braces: write {{{field}}} (for braces around it, with a "
        f"space inside them: {{ {{{field}}} }})."
    )
    # the advice holds: braces with a space inside them are the template's own text
    assert Template.parse("{ {text} } It was{mask}.", ["text"]).render({"text": "ok"}) == ("{ ok } It was", ".")
    assert Template.parse('{"review": {text}} It was{mask}.', ["text"]).render({"text": "ok"}) == (
        '{"review": ok} It was',
        ".",
    )
    # doubled braces around no field are no field: told as before
    with pytest.raises(PeftlabError, match=r"^The template uses \{x\}, which the task lacks"):
        Template.parse("A {{x}} {text} It was{mask}.", ["text"])


def test_a_misspelt_field_is_told_the_field_it_was_near():
    """Every unknown field was told the text column's renaming, a typo on an embedded task too."""
    with pytest.raises(PeftlabError) as error:
        Template.parse("Review: {txet} It was{mask}.", ["text"])
    assert str(error.value) == (
        "The template uses {txet}, which the task lacks; available: {text} and {mask}. Did you mean {text}?"
    )


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_template_empty(text):
    with pytest.raises(PeftlabError, match="empty"):
        Template.parse(text, ["text"])


def test_template_render_fills_columns():
    template = Template.parse(
        "Movie: {movie_name}\nReview: {text}\nSentiment:{mask} ({movie_name})", ["text", "movie_name"]
    )
    before, after = template.render({"text": "a great film", "movie_name": "Jaws", "label": 1})
    assert before == "Movie: Jaws\nReview: a great film\nSentiment:"
    assert after == " (Jaws)"
    # `fill` replaces every column (content-free inputs); a value containing {mask} stays literal text.
    assert template.render({}, fill="N/A") == ("Movie: N/A\nReview: N/A\nSentiment:", " (N/A)")
    assert template.render({"text": "odd {mask} text", "movie_name": 7}) == (
        "Movie: 7\nReview: odd {mask} text\nSentiment:",
        " (7)",
    )


def test_a_typed_text_fills_the_one_column_it_can():
    assert typed_example(" a great film\n", ["text"]) == {"text": " a great film\n", "label": 0}


def test_a_typed_text_gives_each_column_of_a_template_reading_several_its_own_line():
    typed = "movie_name: Jaws\ntext: a shark film: tense\nand loud"  # a colon and a second line in the review
    assert typed_example(typed, ["movie_name", "text"]) == {
        "movie_name": "Jaws",
        "text": "a shark film: tense\nand loud",
        "label": 0,
    }
    assert typed_example("text: good\n movie_name : Up", ["movie_name", "text"])["movie_name"] == "Up"


@pytest.mark.parametrize(
    "typed",
    [
        "A gripping, beautifully acted film.",  # one text for two columns: it used to fill both
        "text: a great film",  # a column left out
        "movie_name: \ntext: a great film",  # a column left empty
        "Great!\nmovie_name: Jaws\ntext: a great film",  # words before the first column's line
    ],
)
def test_a_typed_text_without_a_line_for_each_column_is_refused(typed):
    with pytest.raises(PeftlabError) as refused:
        typed_example(typed, ["movie_name", "text"])
    assert str(refused.value) == (
        "The template reads 2 columns (movie_name, text): type one line for each, 'movie_name: ...' then "
        "'text: ...' (Shift+Enter starts a line in the app's box)."
    )


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_an_empty_typed_text_is_refused(text):
    with pytest.raises(PeftlabError, match="^Type a text to classify.$"):
        typed_example(text, ["movie_name", "text"])


def test_template_mask_at_start_and_end():
    assert Template.parse("{text}{mask}", ["text"]).render({"text": "x"}) == ("x", "")
    assert Template.parse("{mask}: {text}", ["text"]).render({"text": "x"}) == ("", ": x")


def test_word_with_space_rule():
    assert _word_with_space("Sentiment:", "good") == ("Sentiment:", " good")
    assert _word_with_space("Sentiment:   ", "good") == ("Sentiment:", " good")
    assert _word_with_space("Review: x\n", "good") == ("Review: x\n", "good")
    assert _word_with_space("Review: x\n  ", "good") == ("Review: x\n", "good")
    assert _word_with_space("", "good") == ("", "good")
    assert _word_with_space("   ", "good") == ("", "good")


def test_space_before_mask_is_folded(tiny_lm, tiny_task):
    example = tiny_task.test[1]
    variants = [
        "Review: {text}\nSentiment:{mask}",
        "Review: {text}\nSentiment: {mask}",
        "Review: {text}\nSentiment:    {mask}",
    ]
    queries = [_as_tuples(_prompt(t).queries(tiny_lm, example)) for t in variants]
    assert queries[0] == queries[1] == queries[2]


def test_mask_after_newline_gets_no_leading_space(tiny_causal):
    example = {"text": "a good film", "label": 1}
    verbalizer = {"negative": ["bad"], "positive": ["great"]}
    after_newline = _prompt("Review: {text}\n{mask}", verbalizer).queries(tiny_causal, example)
    inline = _prompt("Review: {text} {mask}", verbalizer).queries(tiny_causal, example)
    targets = {w: ids for q in after_newline for w, ids in q.targets}
    assert targets == {0: _ids(tiny_causal, "bad"), 1: _ids(tiny_causal, "great")}
    inline_targets = {w: ids for q in inline for w, ids in q.targets}
    assert inline_targets == {0: _ids(tiny_causal, " bad"), 1: _ids(tiny_causal, " great")}
    assert _ids(tiny_causal, "great") != _ids(tiny_causal, " great")  # the byte-level BPE tells them apart
    # The newline stays in the prefix; the trailing space of the inline variant does not.
    newline_prefix = after_newline[0].input_ids[: after_newline[0].read_positions[0] + 1]
    assert newline_prefix == tiny_causal.tokenizer("Review: a good film\n").input_ids
    inline_prefix = inline[0].input_ids[: inline[0].read_positions[0] + 1]
    assert inline_prefix == tiny_causal.tokenizer("Review: a good film").input_ids


def test_mask_at_start_reads_after_bos(tiny_causal):
    queries = _prompt("{mask}: {text}", {"negative": ["bad"], "positive": ["great"]}).queries(
        tiny_causal, {"text": "a film", "label": 0}
    )
    # With text after the mask every word has its own continuation, so its own query.
    targets = {}
    for q in queries:
        assert q.input_ids[0] == tiny_causal.tokenizer.bos_token_id
        assert q.read_positions[0] == 0
        targets.update(q.targets)
    assert targets == {
        0: _ids(tiny_causal, "bad") + _ids(tiny_causal, ": a film"),
        1: _ids(tiny_causal, "great") + _ids(tiny_causal, ": a film"),
    }


# ---------------------------------------------------------------- verbalizers


def test_verbalizer_json_dict_and_lines_agree():
    expected = {"negative": ("bad", "terrible"), "positive": ("great",)}
    forms = [
        '{"positive": ["great"], "negative": ["bad", "terrible"]}',
        {"negative": ["bad", " terrible "], "positive": "great"},
        "negative: bad, terrible\npositive: great",
        "positive:great;negative: bad ,terrible",
        "\n  negative : bad, terrible\n\n  positive: great  \n",
    ]
    for form in forms:
        verbalizer = Verbalizer.parse(form, LABELS)
        assert verbalizer.words == expected, form
        assert list(verbalizer.words) == LABELS  # the task's label order, whatever order the spec uses
        assert verbalizer.flat_words == [(0, "bad"), (0, "terrible"), (1, "great")]
    assert Verbalizer.parse(Verbalizer.parse(forms[0], LABELS).to_json(), LABELS).words == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ('{"negative": ["bad"], "positive": ["good"], "neutral": ["ok"]}', r"label\(s\) 'neutral' that the task lacks"),
        ("negative: bad\npositiv: good", r"'positiv' that the task lacks.*'negative', 'positive'"),
        ({"negative": ["bad"]}, r"no word for label\(s\) 'positive'"),
        ("negative: bad", r"no word for label\(s\) 'positive'"),
        ("negative: bad, \npositive: good", r"Label 'negative' has an empty label word"),
        ({"negative": [], "positive": ["good"]}, r"Label 'negative' has an empty label word"),
        ({"negative": ["bad"], "positive": "  "}, r"Label 'positive' has an empty label word"),
        (
            '{"negative": [bad], "positive": ["good"]}',
            r"^The verbalizer is not valid JSON \(Expecting value at line 1, column 15\)\.$",
        ),
        ('{"negative": ["bad"],}', r"not valid JSON"),
        ("", r"verbalizer is empty"),
        ("   ", r"verbalizer is empty"),
        ("negative bad\npositive: good", r"line 'negative bad' needs the form 'label: word1, word2'"),
        # a label given twice kept only its last words, without a word
        (
            "negative: bad\nnegative: awful\npositive: good",
            r"^The verbalizer gives label 'negative' twice; put all "
            r"its words in one place \('negative: word1, word2'\)\.$",
        ),
        ('{"negative": ["bad"], "positive": ["good"], "negative": ["awful"]}', r"gives label 'negative' twice"),
        # one word for two labels was accepted, and those labels could never be told apart
        (
            "negative: good\npositive: good",
            r"^The label word 'good' is given to both 'negative' and 'positive'; a word scores one label only, or "
            r"the two cannot be told apart\.$",
        ),
        ({"negative": ["bad", "meh"], "positive": [" meh "]}, r"^The label word 'meh' is given to both"),
    ],
)
def test_verbalizer_errors(spec, message):
    with pytest.raises(PeftlabError, match=message):
        Verbalizer.parse(spec, LABELS)


@pytest.mark.parametrize(
    "spec",
    [
        '{"negative": null, "positive": ["good"]}',
        '{"negative": 3, "positive": ["good"]}',
        '{"negative": ["bad", null], "positive": ["good"]}',
        '{"negative": [["bad"]], "positive": ["good"]}',
        {"negative": None, "positive": ["good"]},
    ],
)
def test_verbalizer_rejects_non_word_values(spec):
    with pytest.raises(PeftlabError, match=r"Label 'negative'"):
        Verbalizer.parse(spec, LABELS)


def test_a_verbalizer_given_as_a_list_is_one_sentence():
    """A list of words failed as "AttributeError: 'list' object has no attribute 'strip'"."""
    with pytest.raises(PeftlabError) as raised:
        Verbalizer.parse(["bad", "good"], LABELS)
    assert str(raised.value) == (
        "The verbalizer maps each label to its words (a dict, JSON or 'label: word' lines), not a list; for example "
        "{'negative': 'bad', 'positive': 'good'}."
    )


def test_a_template_s_one_column_may_be_given_as_a_string():
    """Template.parse(text, "text") read the column's letters and said "write {t} or {e} or {x} or {t}"."""
    assert Template.parse("{text} {mask}", "text") == Template.parse("{text} {mask}", ["text"])


def test_suggested_prompt_parses_for_any_task():
    template, verbalizer = suggested_prompt("my-upload", ["cats", "dogs"])
    Template.parse(template, ["text"])
    assert Verbalizer.parse(verbalizer, ["cats", "dogs"]).words == {"cats": ("cats",), "dogs": ("dogs",)}
    template, verbalizer = suggested_prompt("rt-sentiment", LABELS)
    Template.parse(template, ["text"])
    Verbalizer.parse(verbalizer, LABELS)


# ---------------------------------------------------------------- queries


def test_masked_queries_one_per_piece_count(tiny_mlm):
    tokenizer = tiny_mlm.tokenizer
    assert len(_ids(tiny_mlm, "terrible")) == 2 and len(_ids(tiny_mlm, "fantastic")) == 2
    prompt = _prompt("Review: {text}\nSentiment:{mask} !")
    queries = prompt.queries(tiny_mlm, {"text": "a good film", "label": 1})
    assert len(queries) == 2
    before = _ids(tiny_mlm, "Review: a good film\nSentiment:")
    after = _ids(tiny_mlm, " !")
    by_masks = {len(q.read_positions): q for q in queries}
    for n, words in ((1, ["bad", "great"]), (2, ["terrible", "fantastic"])):
        q = by_masks[n]
        assert q.input_ids == [tokenizer.cls_token_id] + before + [tokenizer.mask_token_id] * n + after + [
            tokenizer.sep_token_id
        ]
        assert q.read_positions == list(range(1 + len(before), 1 + len(before) + n))
        flat = [w for _, w in prompt.verbalizer.flat_words]
        assert [(flat[w], ids) for w, ids in q.targets] == [(w, _ids(tiny_mlm, w)) for w in words]


def test_causal_queries_score_every_piece_and_the_suffix(tiny_causal):
    prompt = _prompt("Review: {text}\nSentiment:{mask}")
    queries = prompt.queries(tiny_causal, {"text": "a good film", "label": 1})
    prefix = tiny_causal.tokenizer("Review: a good film\nSentiment:").input_ids
    assert prefix[0] == tiny_causal.tokenizer.bos_token_id
    flat = [w for _, w in prompt.verbalizer.flat_words]
    # One query for the single-token words (they share the empty stem), one per multi-token word.
    assert len(_ids(tiny_causal, " terrible")) > 2 and len(_ids(tiny_causal, " fantastic")) > 2
    assert len(queries) == 3
    seen = {}
    for q in queries:
        for w, ids in q.targets:
            seen[flat[w]] = ids
            assert ids == _ids(tiny_causal, " " + flat[w])
            assert len(ids) == len(q.read_positions)
            assert q.input_ids == prefix + ids[:-1]
            assert q.read_positions == list(range(len(prefix) - 1, len(prefix) - 1 + len(ids)))
    assert sorted(seen) == sorted(flat)

    with_suffix = _prompt("Review: {text}\nSentiment:{mask} overall.").queries(
        tiny_causal, {"text": "a good film", "label": 1}
    )
    suffix = _ids(tiny_causal, " overall.")
    for q in with_suffix:
        for w, ids in q.targets:
            assert ids == _ids(tiny_causal, " " + flat[w]) + suffix
            assert q.input_ids == prefix + ids[:-1]


# ---------------------------------------------------------------- truncation


def test_lm_max_length(tiny_mlm, tiny_causal):
    assert tiny_mlm.max_length == 128
    assert tiny_causal.max_length == 256


def test_a_long_text_is_cut_and_the_template_kept(tiny_lm):
    """The field is cut on its side away from the mask: before the mask it keeps its end (next to the mask)."""
    tokenizer = tiny_lm.tokenizer
    long_text = " ".join(["good", "film", "plot"] * 200) + " the end was bad"
    prompt = _prompt("Review: {text}\nSentiment:{mask} !")
    queries = prompt.queries(tiny_lm, {"text": long_text, "label": 1})
    assert len(_ids(tiny_lm, "Review: " + long_text + "\nSentiment:")) > tiny_lm.max_length
    start = [tokenizer.cls_token_id if tiny_lm.kind == "mlm" else tokenizer.bos_token_id]
    review, sentiment = _ids(tiny_lm, "Review:"), _ids(tiny_lm, "\nSentiment:")
    lengths = [len(q.input_ids) for q in queries]
    assert tiny_lm.max_length - 4 <= max(lengths) <= tiny_lm.max_length  # filled up to the limit, not beyond
    for q in queries:
        assert q.input_ids[: 1 + len(review)] == start + review  # the template's own text survives
        before_mask = q.input_ids[: q.read_positions[0] + (0 if tiny_lm.kind == "mlm" else 1)]
        assert before_mask[-len(sentiment) :] == sentiment
        text_end = _ids(tiny_lm, " the end was bad")
        assert before_mask[-len(sentiment) - len(text_end) : -len(sentiment)] == text_end  # the text's end is kept


def test_a_long_text_after_the_mask_keeps_its_start(tiny_lm):
    long_text = "the end was bad " + " ".join(["good", "film", "plot"] * 300)
    prompt = _prompt("Sentiment:{mask}\nReview: {text}")
    queries = prompt.queries(tiny_lm, {"text": long_text, "label": 1})
    assert all(len(q.input_ids) <= tiny_lm.max_length for q in queries)
    review = _ids(tiny_lm, "\nReview: the end was bad")
    flat = [w for ws in VERBALIZER.values() for w in ws]
    for q in queries:
        if tiny_lm.kind == "mlm":
            tail = q.input_ids[q.read_positions[-1] + 1 :]
            assert tail[: len(review)] == review
            continue
        for w, ids in q.targets:  # a causal LM scores the word and then the rest: the template and the text's start
            n = len(_ids(tiny_lm, " " + flat[w]))
            assert ids[n : n + len(review)] == review


def test_virtual_tokens_take_their_room_from_the_input(tiny_causal):
    long_text = " ".join(["good", "film", "plot"] * 200)
    prompt = Prompt(
        Template.parse("Review: {text}\nSentiment:{mask}", ["text"]),
        Verbalizer.parse(VERBALIZER, LABELS),
        reserved_positions=20,
    )
    assert all(
        len(q.input_ids) <= tiny_causal.max_length - 20 for q in prompt.queries(tiny_causal, {"text": long_text})
    )


def test_no_room_for_input(tiny_mlm):
    prompt = _prompt("{text}{mask} " + "good " * 200)
    with pytest.raises(PeftlabError, match="no room for the input"):
        prompt.queries(tiny_mlm, {"text": "a film", "label": 0})


# ---------------------------------------------------------------- demonstrations


def test_pick_demonstrations_balanced_and_deterministic(tiny_task):
    pool = tiny_task.train
    for k, expected in ((2, {0: 1, 1: 1}), (4, {0: 2, 1: 2}), (5, {0: 3, 1: 2}), (50, {0: 6, 1: 6})):
        picked = pick_demonstrations(pool, k, 2, seed=13)
        assert Counter(r["label"] for r in picked) == expected
        assert all(r in pool for r in picked)
        assert len({r["text"] for r in picked}) == len(picked)
        assert picked == pick_demonstrations(pool, k, 2, seed=13)
    runs = {tuple(r["text"] for r in pick_demonstrations(pool, 4, 2, seed)) for seed in range(6)}
    assert len(runs) > 1  # the seed matters
    # The picks come in a shuffled order, not always the classes in turn starting with label 0.
    assert {pick_demonstrations(pool, 2, 2, seed)[0]["label"] for seed in range(10)} == {0, 1}
    assert pool == tiny_task.train and len(pool) == 12  # the pool is not modified
    assert pick_demonstrations(pool, 0, 2, seed=1) == []
    with pytest.raises(PeftlabError, match="0 or more"):
        pick_demonstrations(pool, -1, 2, seed=1)


def test_demonstrations_precede_the_input(tiny_lm, tiny_task):
    tokenizer = tiny_lm.tokenizer
    demos = pick_demonstrations(tiny_task.train, 2, 2, seed=13)
    prompt = _prompt("Review: {text}\nSentiment:{mask}", demonstrations=demos)
    text = prompt.demonstration_text()
    first_word = {0: "bad", 1: "great"}
    expected = "".join(f"Review: {d['text']}\nSentiment: {first_word[d['label']]}\n\n" for d in demos)
    assert text == expected

    def norm(s: str) -> str:
        return tokenizer.decode(_ids(tiny_lm, s))

    example = tiny_task.test[1]
    for q in prompt.queries(tiny_lm, example):
        decoded = tokenizer.decode(q.input_ids)
        positions = [decoded.find(norm(f"Review: {d['text']}\nSentiment: {first_word[d['label']]}")) for d in demos]
        positions.append(decoded.find(norm(f"Review: {example['text']}\nSentiment:")))
        assert all(p >= 0 for p in positions), decoded
        assert positions == sorted(positions)


# ---------------------------------------------------------------- tokens as text


def test_a_token_holding_part_of_a_character_shows_its_bytes(tiny_causal):
    """An emoji's first bytes decode to '�' alone: the Cloze tab's top tokens listed two different tokens as '�'."""
    tokenizer = tiny_causal.tokenizer
    first, second = tokenizer.convert_tokens_to_ids(["ð", "Ł"])  # byte-level BPE's stand-ins for bytes 0xF0 and 0x9F
    assert tokenizer.decode([first]) == tokenizer.decode([second]) == "\ufffd"
    assert token_text(tokenizer, first) == "\\xf0 (part of a character)"
    assert token_text(tokenizer, second) == "\\x9f (part of a character)"
    word = tokenizer.convert_tokens_to_ids("Ġgreat")
    assert token_text(tokenizer, word) == tokenizer.decode([word]) == " great"
    assert token_text(tokenizer, tokenizer.convert_tokens_to_ids("Ċ")) == "\\n"  # a newline, not an empty cell


def test_a_byte_fallback_piece_shows_its_byte_and_a_whole_replacement_character_stays():
    class Pieces:  # a SentencePiece vocabulary's byte-fallback spelling, as its tokenizer answers
        # 1: byte-level BPE's spelling of U+FFFD's 3 bytes; 3: of a newline and an emoji's first byte
        spelled = {0: "<0xE2>", 1: "ï¿½", 2: "[odd]", 3: "Ċð"}

        def decode(self, ids):
            return "\ufffd"

        def convert_ids_to_tokens(self, token_id):
            return self.spelled[token_id]

    assert token_text(Pieces(), 0) == "\\xe2 (part of a character)"
    assert token_text(Pieces(), 1) == "\ufffd"  # the character U+FFFD itself, whole
    assert token_text(Pieces(), 2) == "[odd]"  # whole characters: the vocabulary's own spelling
    assert token_text(Pieces(), 3) == "\\n\\xf0 (part of a character)"


def test_a_typed_text_longer_than_any_article_is_refused_before_it_is_tokenised():
    """240,000 typed characters held one of the app's light slots for 12 s of tokenising, every visitor's to share."""
    from peftlab.prompts import MAX_TYPED_CHARACTERS

    assert typed_example("a" * MAX_TYPED_CHARACTERS, ["text"])["text"] == "a" * MAX_TYPED_CHARACTERS
    with pytest.raises(PeftlabError) as refused:
        typed_example("a" * 240_000, ["text"])
    assert str(refused.value) == (
        "The text has 240,000 characters; classify at most 50,000 at a time (the model reads far fewer)."
    )
