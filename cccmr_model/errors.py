"""User-facing errors: the CLI prints their message as one line and exits non-zero, with no traceback."""


class CccmrError(Exception):
    """A problem the user can fix (bad input, bad config); the message names the file and what is wrong."""

    exit_code = 2


class ConfigError(CccmrError):
    """An experiment config that cannot be used: unknown key, wrong type, impossible value, missing file."""


class DataError(CccmrError):
    """Input data (DICOM series, manifest, cache) that cannot be used."""


class TrainingError(CccmrError):
    """Training that cannot go on, e.g. a non-finite loss; the message says what was kept."""
