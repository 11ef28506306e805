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


def not_utf8(exc: UnicodeDecodeError) -> str:
    """What a decoding error found, for a one-line message: `UTF-8 text (byte 0xe9 at offset 9)`."""
    return f"UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
