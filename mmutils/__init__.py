"""mmutils: the helper package of *Cross-Modal Learning, Hands-On*.

Use it as ``import mmutils as mm``; submodules load on first use (``mm.world``,
``mm.nn``, ``mm.clip`` ...), and the most used functions are also available at the
top level (``mm.seed_everything``, ``mm.device``, ``mm.fit`` ...).

The package has three layers; a module imports only from the layers below it,
and a chapter module never imports another chapter module:

1. Foundation, which knows nothing of neural networks:

   ===================  ======================================================
   ``mm.checks``        argument checks shared by every public function
   ``mm.runtime``       seeding, device choice, timing
   ``mm.world``         ShapesWorld: scenes, images, captions, questions, clips,
                        sound, per-cell labels and scene perturbations
   ``mm.train``         a fit loop by steps with a progress bar and a history
   ``mm.text``          tokenizers (Hugging Face ``tokenizers``) and the MiniLM model
   ``mm.augment``       batched image augmentations on tensors
   ``mm.data``          tensors and datasets from ShapesWorld and offline real data
   ``mm.metrics``       accuracy, Recall@K, BLEU, fact accuracy, Spearman, alignment
   ``mm.plot``          small figures: image grids, curves, spectrograms, heat maps
   ===================  ======================================================

2. ``mm.nn``, the building blocks: ``mm.nn.layers`` (pooling, FiLM, cross-attention
   blocks, coordinate grids, masks), ``mm.nn.encoders`` (one configurable conv
   tower, text and audio encoders, a region tagger), ``mm.nn.fusion`` (early,
   late, FiLM and cross-attention fusion) and ``mm.nn.losses`` (InfoNCE, CLIP,
   MoCo, SimCSE and distillation losses).

3. One module per method family, each used by its chapter:

   =====================  ======================================================
   ``mm.probes``          unimodal probes (chapter 1)
   ``mm.keras_port``      a much-copied Keras text, image and audio classifier, ported, bugs fixed (chapter 1)
   ``mm.captioning``      attention captioner, greedy and beam search (chapter 3)
   ``mm.matching``        hard negatives, cross-encoder matching, re-ranking (chapter 4)
   ``mm.vqa``             visual question answering models and baselines (chapter 5)
   ``mm.generation``      oracle judge, Fréchet distance, rectified flow, guidance, latent generators (chapter 6)
   ``mm.autoregressive``  image tokens from a k-means codebook, a GPT-2 over caption then image tokens (chapter 6)
   ``mm.layout``          two objects and a relation: plan a layout, paint each object, compose latents (chapter 6)
   ``mm.editing``         SDEdit and inpainting helpers: holes, crops, exact merge, edit success and preservation (chapter 7)
   ``mm.animation``       text to clips: motion captions, object centres, identity and motion of a clip (chapter 8)
   ``mm.clip``            CLIP-style dual encoder, zero-shot, relation-swap test (chapter 9)
   ``mm.moco``            momentum contrast, linear probes (chapter 10)
   ``mm.simcse``          sentence encoder, SimCSE, synthetic STS benchmark (chapter 11)
   ``mm.pretraining``     contrastive + matching + captioning in one model (chapter 12)
   ``mm.distill``         knowledge distillation: soft targets, affinity mimicking, teacher outputs (chapter 14)
   ``mm.multitask``       loss weighting (equal, uncertainty) and PCGrad for one backbone with several heads (chapter 15)
   ``mm.retrieval``       faiss indexes, recall against exact search, questions about a collection (chapter 16)
   ``mm.video``           clips with motion labels, frame averaging, (2+1)D, divided space-time attention (chapter 17)
   ``mm.distributed``     data-parallel contrastive training with torchrun (chapter 18)
   =====================  ======================================================
"""
from __future__ import annotations

import importlib
import warnings

__version__ = "0.1.0"

# Libraries such as transformers import ``tqdm.auto``, which warns inside Jupyter when
# ipywidgets is missing. The course uses plain text progress bars on purpose (they render
# on the website), so that warning is noise.
warnings.filterwarnings("ignore", message="IProgress not found")

# Top-level shortcuts: name -> submodule that defines it.
_SHORTCUTS = {
    "seed_everything": "runtime",
    "device": "runtime",
    "Timer": "runtime",
    "fit": "train",
    "random_batches": "train",
}


def __getattr__(name: str):
    """Load submodules and shortcuts lazily (PEP 562)."""
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(f".{_SHORTCUTS[name]}", __name__), name)
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SHORTCUTS))
