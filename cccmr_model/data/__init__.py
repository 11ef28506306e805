"""DICOM ingestion at a hospital site (paper section 3.1): read, assemble, preprocess, cache, and serve.

- `load_series(path)`: a series folder or multi-frame file -> `Series` (slices, frames, rows, cols).
- `read_manifest(path)`: the site's `manifest.csv` (subject, label, subtype, series paths), every row good;
  `load_manifest(path)`: its good rows and its refused rows (each names its line).
- `discover_series(root, config)`: group a raw export by SeriesInstanceUID and classify it (draft manifest).
- `ingest_site(root, cache_dir, config, workers, strict=, allow_outside_paths=)`: everything into the cache
  -> `IngestReport`.
- `CachedDataset(cache_dir, subjects, transform)`: the cache as a torch Dataset.
"""

from cccmr_model.data.dataset import CachedDataset
from cccmr_model.data.discover import Discovery, SeriesInfo, discover_series
from cccmr_model.data.ingest import IngestReport, Rejection, ingest_site
from cccmr_model.data.manifest import SUBTYPES, Manifest, ManifestEntry, load_manifest, read_manifest
from cccmr_model.data.preprocess import Preprocessed, preprocess_series
from cccmr_model.data.series import Series, SeriesError, load_series

__all__ = [
    "SUBTYPES",
    "CachedDataset",
    "Discovery",
    "IngestReport",
    "Manifest",
    "ManifestEntry",
    "Preprocessed",
    "Rejection",
    "Series",
    "SeriesError",
    "SeriesInfo",
    "discover_series",
    "ingest_site",
    "load_manifest",
    "load_series",
    "preprocess_series",
    "read_manifest",
]
