"""The release a consortium publishes: cine-only weights, resolved config, metrics and model card, hashed.

`write_release` is called at the end of `cccmr train` and of the federation's ServerApp; `load_release` verifies
a release (versions, every file's sha256, every weight's name and shape) before `cccmr predict` or `cccmr export`
uses it.
"""

from cccmr_model.release.files import FORMAT_VERSION, RELEASE_PREFIXES
from cccmr_model.release.load import Release, ReleaseError, load_release, verify_release
from cccmr_model.release.write import release_state, write_release

__all__ = [
    "FORMAT_VERSION",
    "RELEASE_PREFIXES",
    "Release",
    "ReleaseError",
    "load_release",
    "release_state",
    "verify_release",
    "write_release",
]
