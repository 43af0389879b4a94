"""The neural-network building blocks that the chapter modules assemble into models.

* :mod:`mmutils.nn.layers` – pooling, FiLM, a cross-attention block, coordinate grids, masks.
* :mod:`mmutils.nn.encoders` – one configurable conv tower, text and audio encoders, a region tagger, a dual encoder.
* :mod:`mmutils.nn.fusion` – early, late, FiLM and cross-attention fusion, modality dropout.
* :mod:`mmutils.nn.losses` – InfoNCE, CLIP, MoCo, SimCSE and distillation losses.

The main names are re-exported here: ``mm.nn.ConvTower``, ``mm.nn.clip_loss``, ...
"""
from __future__ import annotations

from . import encoders, fusion, layers, losses
from .encoders import (ConvTower, DualEncoder, DualEncoderConfig, RegionTagger, RNNTextEncoder, SpectrogramEncoder,
                       TransformerTextEncoder, WaveformEncoder, resnet18_32, train_region_tagger)
from .fusion import (STRATEGIES, ConcatFusion, CrossAttentionFusion, FusionClassifier, FusionConfig, LateFusion,
                     modality_dropout)
from .layers import (AttentionPooling, CrossAttentionBlock, FiLM, GlobalMaxPool1d, causal_mask, coordinate_grid,
                     grid_position_embedding, masked_mean)
from .losses import (CLIP_INIT_LOGIT_SCALE, CLIP_MAX_LOGIT_SCALE, clip_loss, distillation_loss, info_nce,
                     logit_scale_to_scale, moco_loss, simcse_loss)

__all__ = ["layers", "encoders", "fusion", "losses", *layers.__all__, *encoders.__all__, *fusion.__all__,
           *losses.__all__]
