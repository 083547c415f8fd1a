"""load_lm: local folders of both kinds, kind detection, per-process caching, clear errors for bad names."""

import time
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, GPT2Config, LlamaConfig

from peftlab.errors import PeftlabError
from peftlab.models import detect_kind, load_lm, parse_dtype


@pytest.fixture(params=["mlm", "causal"])
def saved_tiny(request, tmp_path):
    lm = request.getfixturevalue(f"tiny_{request.param}")
    folder = tmp_path / request.param
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return lm, folder


def test_local_folder_loads_with_its_kind_and_weights(saved_tiny):
    original, folder = saved_tiny
    lm = load_lm(str(folder), dtype="fp32", device="cpu")
    assert lm.kind == original.kind
    assert lm.dtype == torch.float32
    for (name, loaded), (_, source) in zip(lm.model.state_dict().items(), original.model.state_dict().items()):
        assert torch.equal(loaded, source), name
    assert load_lm(str(folder), dtype="fp32", device="cpu") is lm  # cached per process
    assert load_lm(str(folder), dtype="bf16", device="cpu").dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (BertConfig(architectures=["BertForMaskedLM"]), "mlm"),
        (BertConfig(), "mlm"),  # no architectures recorded: an encoder with a masked-LM head
        (LlamaConfig(architectures=["LlamaForCausalLM"]), "causal"),
        (GPT2Config(architectures=["GPT2LMHeadModel"]), "causal"),
        (LlamaConfig(), "causal"),
    ],
)
def test_detect_kind(config, kind):
    assert detect_kind(config) == kind


def test_unreachable_hub_id_is_one_quick_sentence():
    started = time.perf_counter()
    with pytest.raises(
        PeftlabError, match=r"Model 'someone/not-here' could not be loaded.*Hub is unreachable.*smollm2-135m"
    ):
        load_lm("someone/not-here")
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("name", "message"),
    [("", r"No model name given"), ("./not-a-folder", r"not a model folder"), ("/etc/hostname", r"not a model folder")],
)
def test_bad_model_names(name, message):
    with pytest.raises(PeftlabError, match=message):
        load_lm(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(PeftlabError, match=r"no readable config.json"):
        load_lm(str(tmp_path))


def test_a_checkpoint_without_a_language_model_head_is_refused(tmp_path):
    """Found by a review against the Hub: a `BertModel` checkpoint (every sentence-transformers model) loaded as
    `BertForMaskedLM` with a head made up at random, and its chance-level scores were shown as the model's."""
    from transformers import BertModel, BertTokenizerFast

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    config = BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(PeftlabError) as raised:
        load_lm(str(tmp_path), dtype="fp32", device="cpu")
    assert str(raised.value) == (
        f"Model {str(tmp_path)!r} lacks 6 weights its masked-LM architecture needs (such as 'cls.predictions.bias'), "
        "which would be made up at random and score by chance; pick a model whose checkpoint has its language-model "
        "head (architectures ending in ForMaskedLM or ForCausalLM)."
    )


def test_parse_dtype():
    assert parse_dtype("fp32") is torch.float32
    assert parse_dtype("bfloat16") is torch.bfloat16
    assert parse_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(PeftlabError, match=r"Unknown dtype 'int3'"):
        parse_dtype("int3")


def test_unavailable_reason_says_which_models_cannot_load_here(tiny_causal_folder, monkeypatch):
    from peftlab import models
    from peftlab.models import unavailable_reason

    assert unavailable_reason("smollm2-135m") is None  # embedded
    assert unavailable_reason(tiny_causal_folder) is None  # a local folder
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    assert unavailable_reason("someone/not-cached") == "not on this machine, and the Hub is out of reach"
    cached = {"someone/cached": "/cache/config.json"}
    monkeypatch.setattr(models.huggingface_hub, "try_to_load_from_cache", lambda repo, name: cached.get(repo))
    assert unavailable_reason("someone/cached") is None  # in the local Hub cache
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    assert unavailable_reason("someone/not-cached") is None  # the Hub answers


def test_the_model_list_labels_what_cannot_load_here(monkeypatch):
    from peftlab.ui import common

    monkeypatch.setattr(common, "unavailable_reason", lambda name: None if name == "smollm2-135m" else "offline")
    choices = common.model_choices()
    assert choices[0] == ("smollm2-135m", "smollm2-135m")
    assert ("gpt2 (offline)", "gpt2") in choices  # the value stays the id; the label says why


def test_a_saved_file_names_the_embedded_model_by_its_hub_id():
    """The reward model's info file named the embedded model by this machine's package folder
    (/root/.cache/peftlab/models/smollm2-135m), which loads nothing anywhere else."""
    from peftlab.models import LM

    assert LM(None, None, "causal", "smollm2-135m").hub_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert LM(None, None, "causal", "gpt2").hub_name == "gpt2"


def test_a_card_of_the_embedded_model_says_its_weights_are_the_quantised_files():
    """Saved files name the Hub model; the weights trained on were its Q4_1 GGUF copy, dequantised."""
    from peftlab.models import LM

    embedded = LM(model=None, tokenizer=None, kind="causal", name="smollm2-135m")
    assert embedded.weights_note == (
        "Trained on peftlab's embedded copy of `HuggingFaceTB/SmolLM2-135M-Instruct`: the weights of "
        "`SmolLM2-135M-Instruct.Q4_1.gguf`, dequantised to fp32. On the Hub model's own full-precision weights it will "
        "score a little differently."
    )
    assert LM(model=None, tokenizer=None, kind="causal", name="gpt2").weights_note == ""


def test_a_model_put_on_a_gpu_turns_off_cudnn_attention_whose_backward_gives_nan(tiny_causal_folder, monkeypatch):
    # torch 2.11's cuDNN attention returns NaN gradients under a padding mask on H100/H200 (pytorch#196678): on an
    # H200 a LoRA reward model's loss turned NaN at its third step. No GPU here, so the move itself is skipped.
    from peftlab import models

    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: self)
    switched = []
    monkeypatch.setattr(models, "avoid_cudnn_attention", lambda: switched.append(True))
    models._load_uncached(tiny_causal_folder, torch.float32, torch.device("cpu"))
    assert switched == []  # a CPU keeps every kernel
    models._load_uncached(tiny_causal_folder, torch.float32, torch.device("cuda"))
    assert switched == [True]


def test_avoid_cudnn_attention_turns_cudnn_sdpa_off():
    from peftlab.models import avoid_cudnn_attention

    was = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        avoid_cudnn_attention()
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()  # the kernel that takes its place stays on
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)


def test_an_unreachable_hub_is_asked_again_a_minute_later(monkeypatch):
    """One failed check was kept for the process: a dropped connection turned Hub datasets and models off on a Space
    until it restarted. A yes is still kept."""
    import socket

    from peftlab import hub

    answers = [OSError("dropped"), None, OSError("never asked")]

    class Connection:
        def close(self):
            pass

    def connect(address, timeout):
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return Connection()

    clock = [1000.0]
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(hub.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(hub, "_answer", None)
    assert hub.hub_reachable() is False
    clock[0] += hub.RETRY_AFTER_S - 1
    assert hub.hub_reachable() is False and len(answers) == 2  # not asked again yet
    clock[0] += 2
    assert hub.hub_reachable() is True and len(answers) == 1
    clock[0] += 10 * hub.RETRY_AFTER_S
    assert hub.hub_reachable() is True and len(answers) == 1  # a yes is kept


def test_two_models_loading_at_once_take_turns_and_leave_torch_s_defaults_as_they_were(tiny_causal, tmp_path):
    """transformers' from_pretrained changes process-wide state while it builds (torch's default dtype, and
    PreTrainedModel.tie_weights as a no-op) and puts it back after: two loads at once (two visitors) put back each
    other's, and every later load of the process failed "lacks 1 weight ... 'lm_head.weight'". Loads take turns, and
    build in fp32 (a bf16 one set bf16 as torch's default under every other thread's job), cast after."""
    import threading
    from unittest import mock

    import peftlab.models as models

    folders = []
    for name in ("a", "b"):
        tiny_causal.model.save_pretrained(tmp_path / name)
        tiny_causal.tokenizer.save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    real, lock = models.AutoModelForCausalLM.from_pretrained, threading.Lock()
    seen = {"at once": 0, "most at once": 0, "dtypes asked": [], "defaults": []}

    def watched(*args, **kwargs):
        with lock:
            seen["at once"] += 1
            seen["most at once"] = max(seen["most at once"], seen["at once"])
        try:
            seen["dtypes asked"].append(kwargs["dtype"])
            time.sleep(0.3)  # long enough for the other thread to start its own
            return real(*args, **kwargs)
        finally:
            seen["defaults"].append(torch.get_default_dtype())  # as a job running meanwhile sees it
            with lock:
                seen["at once"] -= 1

    loaded = {}
    with mock.patch.object(models, "AutoModelForCausalLM", mock.Mock(from_pretrained=watched)):
        threads = [
            threading.Thread(target=lambda f=f, d=d: loaded.setdefault(d, load_lm(f, dtype=d, device="cpu")))
            for f, d in zip(folders, ("bf16", "fp32"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert seen["most at once"] == 1
    assert seen["dtypes asked"] == [torch.float32] * 2 and seen["defaults"] == [torch.float32] * 2
    assert (loaded["bf16"].dtype, loaded["fp32"].dtype) == (torch.bfloat16, torch.float32)
    for lm in loaded.values():  # the weights are the saved ones, cast
        assert torch.equal(lm.model.lm_head.weight.float(), tiny_causal.model.lm_head.weight.to(lm.dtype).float())


def _saved(lm_or_model, folder, tokenizer=None):
    model = getattr(lm_or_model, "model", lm_or_model)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return str(folder)


def test_model_folders_whose_parts_do_not_belong_together_are_refused_in_one_sentence(tiny_causal, tmp_path):
    """Found by a review of model loading: each loaded, then failed in its first job with an IndexError or a
    ValueError told as a fault of the app (a folder without tokenizer files got an empty tokenizer; a tokenizer of
    more tokens than the embeddings; BART, in transformers' masked-LM table, loaded as a masked LM; a truncated
    weights file raised SafetensorError)."""
    from transformers import BartConfig, BartForConditionalGeneration, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_causal.tokenizer
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer)))
    no_tokenizer = _saved(gpt2, tmp_path / "no-tokenizer")  # a Llama's fails to load without them, a GPT-2's did not
    with pytest.raises(PeftlabError, match=r"^Model '.*no-tokenizer' has no tokenizer files \(its tokenizer knows"):
        load_lm(no_tokenizer, dtype="fp32", device="cpu")
    small = LlamaForCausalLM(
        LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    small_vocabulary = _saved(small, tmp_path / "small-vocabulary", tokenizer)
    with pytest.raises(
        PeftlabError,
        match=rf"^The tokenizer of model '.*small-vocabulary' has {len(tokenizer)} tokens, more than the 100 its "
        r"embeddings hold: it is not this model's tokenizer\.$",
    ):
        load_lm(small_vocabulary, dtype="fp32", device="cpu")
    sizes = dict(
        d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2
    )
    bart = BartForConditionalGeneration(
        BartConfig(vocab_size=len(tokenizer), encoder_layers=1, decoder_layers=1, **sizes)
    )
    with pytest.raises(PeftlabError, match=r"^Model '.*bart' is an encoder-decoder \(seq2seq\) model; peftlab"):
        load_lm(_saved(bart, tmp_path / "bart", tokenizer), dtype="fp32", device="cpu")
    truncated = Path(_saved(tiny_causal, tmp_path / "truncated", tokenizer)) / "model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(PeftlabError, match=r"^Model '.*truncated' could not be loaded: "):
        load_lm(str(truncated.parent), dtype="fp32", device="cpu")


def test_a_tokenizer_that_names_no_pad_end_or_unknown_token_pads_with_its_first(tiny_causal, tmp_path):
    """With no pad, end-of-text or unknown token, the pad token stayed None and scoring failed in torch.full (a fault
    of the app); what pads a batch is masked out, so the first token does."""
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=tiny_causal.tokenizer.backend_tokenizer)
    folder = _saved(tiny_causal, tmp_path / "bare", bare)
    lm = load_lm(folder, dtype="fp32", device="cpu")
    assert (lm.tokenizer.pad_token_id, lm.tokenizer.eos_token, lm.tokenizer.unk_token) == (0, None, None)


def test_a_half_precision_model_built_in_fp32_scores_as_one_loaded_in_half_precision(tiny_causal, tmp_path):
    """Models are built in fp32 and cast (`building`); casting every tensor put the rotary embeddings' inv_freq, fp32
    on purpose, in bf16, and the embedded model's accuracy on a 200-row upload moved from 0.725 to 0.710."""
    from transformers import AutoModelForCausalLM

    folder = _saved(tiny_causal, tmp_path / "tiny", tiny_causal.tokenizer)
    lm = load_lm(folder, dtype="bf16", device="cpu")
    direct = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert {n: b.dtype for n, b in lm.model.named_buffers()} == {n: b.dtype for n, b in direct.named_buffers()}
    ids = torch.tensor([[1, 5, 9, 30, 41, 7, 12, 3] * 8])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, direct(ids).logits)
