"""Features of a dictionary: per-document scores (feature bars), dashboards built from an
activation cache, labels and search. No Qt here; the GUI and the CLI both call this.

    from core.features import STARTER_DICTIONARY, document_scores, index_for, load_labels
"""

from core.paths import resources_dir

# The dictionary that ships for the bundled teacher (layer-6 residual); see its README.
STARTER_DICTIONARY = resources_dir() / "dictionaries" / "gemma3-270m-l6"

from core.features.scoring import (METHODS, FeatureScores, Reference, class_vector, compare,  # noqa: E402
                                   document_scores, encode_tokens, load_reference, projection_scores,
                                   reference_from_cache, save_reference, token_scores, unit_directions)
from core.features.index import Context, FeatureIndex, index_for  # noqa: E402
from core.features.effects import logit_effects, nearest_features  # noqa: E402
from core.features.labels import (Labels, auto_label, label_all, load_labels, search_labels,  # noqa: E402
                                  search_token)

__all__ = ["STARTER_DICTIONARY", "METHODS", "FeatureScores", "Reference", "class_vector", "compare",
           "document_scores", "encode_tokens", "load_reference", "projection_scores",
           "reference_from_cache", "save_reference", "token_scores", "unit_directions", "Context",
           "FeatureIndex", "index_for", "logit_effects", "nearest_features", "Labels", "auto_label",
           "label_all", "load_labels", "search_labels", "search_token"]
