"""The names of the three CMR sequences, used everywhere (configs, manifests, parameter names, metrics)."""

CINE_4CH = "cine_4ch"
CINE_SAX = "cine_sax"
LGE_SAX = "lge_sax"

SEQUENCES: tuple[str, ...] = (CINE_4CH, CINE_SAX, LGE_SAX)
CINE_SEQUENCES: tuple[str, ...] = (CINE_4CH, CINE_SAX)
# The three pairs of the feature-space-alignment loss, in a fixed order.
SEQUENCE_PAIRS: tuple[tuple[str, str], ...] = ((CINE_4CH, CINE_SAX), (CINE_4CH, LGE_SAX), (CINE_SAX, LGE_SAX))
