"""CC-CMR: LGE-guided cross-modality contrastive learning for gadolinium-free cardiomyopathy screening.

Plain PyTorch, pydicom and numpy; this package never imports flwr (`server/` and `client/` do).
"""

__version__ = "0.1.0"
