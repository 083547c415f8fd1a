"""Shared fixtures: tiny randomly initialised language models and a tiny task, built without downloads.

- `tiny_mlm`: a 2-layer BERT masked LM with a WordPiece vocabulary written to a temporary folder. Some
  label words ("terrible", "fantastic", "horrible") are not in the vocabulary as whole words and split
  into word pieces ("terr" + "##ible", ...).
- `tiny_causal`: a 2-layer Llama causal LM with a byte-level BPE tokenizer trained here on a small corpus;
  frequent words become one token, rare ones ("terrible", "fantastic") split into several. The
  tokenizer adds a BOS token like Llama's does.
- `tiny_task`: a 2-class sentiment task made of words both tokenizers know.
"""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # a stray Hub call fails fast instead of hanging
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Results the tests' commands and app calls keep go to a store of this test session, never the user's.
os.environ["PEFTLAB_RESULTS"] = os.path.join(tempfile.mkdtemp(prefix="peftlab-test-results-"), "results.sqlite")

import pytest  # noqa: E402
import torch  # noqa: E402

from peftlab.models import LM  # noqa: E402
from peftlab.tasks import Task  # noqa: E402

# Under pytest-xdist each worker has a core of its own: two threads each on two cores would fight for them.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "great",
    "good",
    "bad",
    "awful",
    "fun",
    "boring",
    "movie",
    "review",
    "sentiment",
    "it",
    "was",
    "the",
    "a",
    "an",
    "film",
    "this",
    "is",
    "and",
    "but",
    "not",
    "very",
    "really",
    "plot",
    "acting",
    "story",
    "overall",
    "positive",
    "negative",
    "text",
    "label",
    "n",
    "i",
    "loved",
    "hated",
    "liked",
    "so",
    "too",
    "long",
    "short",
    "cast",
    "ending",
    "script",
    "in",
    "of",
    "to",
]
PIECES = ["terr", "##ible", "fantas", "##tic", "hor", "##rible", "##s", "##ly", "##ed", "##ing"]
PUNCTUATION = [":", ".", ",", "!", "?", "/", "'", "-", "(", ")"]
MLM_VOCAB = SPECIAL_TOKENS + WORDS + PIECES + PUNCTUATION

TRAIN_ROWS = [
    ("a great movie and a fun plot", 1),
    ("the acting was very good", 1),
    ("i loved this film", 1),
    ("really fun , the cast was great", 1),
    ("a good story and a great ending", 1),
    ("i liked the script so much", 1),
    ("a bad movie with a boring plot", 0),
    ("the acting was awful", 0),
    ("i hated this film", 0),
    ("really boring , the cast was bad", 0),
    ("a bad story and an awful ending", 0),
    ("too long and not fun", 0),
]
TEST_ROWS = [
    ("great fun", 1),
    ("the film was really very good and the cast was great", 1),
    ("i loved it", 1),
    ("a great story", 1),
    ("awful", 0),
    ("the plot was boring and the ending was bad , too long", 0),
    ("i hated the acting", 0),
    ("not a good movie", 0),
]

CAUSAL_CORPUS = [
    "Review: a great movie. Sentiment: positive",
    "Review: a bad movie. Sentiment: negative",
    "the film was good and the plot was great",
    "the film was bad and the acting was awful",
    "it was great. it was good. it was bad. it was boring. it was fun.",
    "this movie is a good film with a great cast",
    "Text: i loved the story\nLabel: positive",
    "Text: i hated the ending\nLabel: negative",
    "overall the script was really very long and not too short",
    "sentiment review text label positive negative",
]


def _mlm_tokenizer(folder):
    from transformers import BertTokenizer

    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(MLM_VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(vocab=str(vocab_file), do_lower_case=True)


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> LM:
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = _mlm_tokenizer(tmp_path_factory.mktemp("tiny_bert"))
    assert len(tokenizer) == len(MLM_VOCAB)
    config = BertConfig(
        vocab_size=len(MLM_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = BertForMaskedLM(config).eval()
    return LM(model, tokenizer, "mlm", "tiny-bert")


def _causal_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        min_frequency=2,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CAUSAL_CORPUS * 3, trainer=trainer)
    bos = backend.token_to_id("<s>")
    # Like Llama's tokenizer: add_special_tokens=True puts a BOS token in front.
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=256,
    )


@pytest.fixture(scope="session")
def tiny_causal() -> LM:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _causal_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return LM(model, tokenizer, "causal", "tiny-llama")


@pytest.fixture(scope="session")
def tiny_causal_folder(tiny_causal, tmp_path_factory) -> str:
    """The tiny Llama saved as a model folder, as the CLI and the app load a local model."""
    folder = tmp_path_factory.mktemp("tiny-llama-folder")
    tiny_causal.model.save_pretrained(folder)
    tiny_causal.tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session", params=["mlm", "causal"])
def tiny_lm(request) -> LM:
    """Each tiny model in turn."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="session")
def tiny_task() -> Task:
    return Task(
        name="tiny-sentiment",
        label_names=["negative", "positive"],
        text_fields=["text"],
        train=[{"text": t, "label": y} for t, y in TRAIN_ROWS],
        test=[{"text": t, "label": y} for t, y in TEST_ROWS],
    )


@pytest.fixture(scope="session")
def easy_csv(tmp_path_factory) -> str:
    """The easy task as a CSV file with its splits, as a person uploads it."""
    path = tmp_path_factory.mktemp("easy") / "easy.csv"
    from tests.test_compare import easy_task

    easy = easy_task()
    lines = ["text,label,split"] + [f"{r['text']},{easy.label_names[r['label']]},train" for r in easy.train]
    lines += [f"{r['text']},{easy.label_names[r['label']]},test" for r in easy.test]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def zero_gpu(monkeypatch) -> list[float]:
    """A ZeroGPU Space simulated on the CPU: SPACES_ZERO_GPU set, and every GPU call's job, arguments and items
    pickled across as `spaces` pickles them into and out of its forked worker (a job that leans on anything but its
    pickled arguments, or yields what cannot cross, fails here), and any error but a gr.Error reaching the app as
    spaces reports it, by its class's name only. Returns the durations the calls asked for."""
    import pickle

    from peftlab import zerogpu

    asked = []

    def pickled_call(seconds, crossing):
        import gradio as gr

        asked.append(seconds)
        try:
            for item in zerogpu._in_gpu_call(seconds, crossing):  # the function spaces.GPU decorates
                yield pickle.loads(pickle.dumps(item))
        except gr.Error:
            raise
        except Exception as exc:  # as spaces reports any other error of a call: its class's name, no message
            raise gr.Error(type(exc).__name__, title="ZeroGPU worker error") from None

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(zerogpu, "gpu_call", pickled_call)
    monkeypatch.setattr(zerogpu, "_PACES", {})
    # and the tabs' paces: one an earlier test measured in this process (the RLHF sampling's) spared a measuring call,
    # and a count of calls failed as tests were spread over processes otherwise
    monkeypatch.setattr("peftlab.ui.estimates._PACES", {})
    return asked
