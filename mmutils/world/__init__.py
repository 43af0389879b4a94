"""ShapesWorld, the course's procedural multimodal world: scenes with known ground truth in every modality.

Every scene is a handful of coloured shapes on a dark canvas; from it come an image (:func:`render`),
captions and their parser (:func:`caption`, :func:`parse_caption`), questions (:func:`ask`), clips
(:func:`sample_sequences`), a sound (:func:`synthesize_audio`), per-cell labels (:func:`cell_labels`) and
perturbations (:func:`swap_positions`, :func:`with_attribute`). Submodules, each importing only the ones
before it: scenes, rendering, language, qa, motion, audio, labels, perturb, texts. Coordinates are in
the unit square, ``y`` growing downwards; the same seed always gives the same arrays and texts.
"""
from .audio import spectrogram, synthesize_audio
from .labels import cell_labels, decode_cell_label
from .language import (
    caption, captions, desc_matches, drop_attributes, facts_hold, motion_caption, parse_caption, scene_facts,
    swap_relation, vocabulary,
)
from .motion import render_sequences, sample_sequences
from .perturb import swap_positions, with_attribute
from .qa import ask, questions
from .rendering import render
from .scenes import (
    ANSWERS, ATTRIBUTE_VALUES, BACKGROUND_GREY, COLOR_RGB, COLORS, DIRECTION_VECTORS, DIRECTIONS, MAX_OBJECTS, OPPOSITE,
    QUESTION_TYPES, RADIUS, RELATIONS, SHAPES, SIZES, Obj, Question, Scene, Sequence, sample_scenes,
)
from .texts import corpus

__all__ = [
    "SHAPES", "COLORS", "COLOR_RGB", "BACKGROUND_GREY", "SIZES", "RELATIONS", "OPPOSITE", "DIRECTIONS",
    "DIRECTION_VECTORS", "QUESTION_TYPES", "ANSWERS", "MAX_OBJECTS", "RADIUS", "ATTRIBUTE_VALUES",
    "Obj", "Scene", "Question", "Sequence",
    "sample_scenes", "render", "caption", "captions", "drop_attributes", "parse_caption", "scene_facts", "facts_hold",
    "desc_matches", "swap_relation", "ask", "questions", "sample_sequences", "render_sequences", "motion_caption",
    "synthesize_audio", "spectrogram", "corpus", "vocabulary",
    "cell_labels", "decode_cell_label", "swap_positions", "with_attribute",
]
