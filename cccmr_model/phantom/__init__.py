"""The synthetic multi-centre CMR cohort: the demo's data, the tests' data, a benchmark (not hospital data).

- `cohort`: `generate_cohort(out, sites, subjects, seed)` writes per-site DICOM exports, manifests and ground truth.
- `anatomy`: the analytic beating heart; `subjects`: healthy and cardiomyopathy phenotypes.
- `sites`: scanner vendors and hospital sites; `render`: image planes and MR physics.
- `dicom_writer`: `write_series`, a general MR DICOM writer (also used by the ingestion tests).
- `preview`: a PNG montage of a generated cohort.
"""

from cccmr_model.phantom.cohort import generate_cohort

__all__ = ["generate_cohort"]
