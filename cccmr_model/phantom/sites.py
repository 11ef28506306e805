"""Scanner vendors and hospital sites of the synthetic cohort: what makes one centre's exports differ from another's.

A site has a vendor mix, a disease prevalence and subtype mix (non-IID across sites), a slice thickness and an SNR.
A vendor has its tags (Manufacturer, model names, SeriesDescription conventions), its intensity scaling
(RescaleSlope/Intercept) and its export format (Philips writes enhanced multi-frame files here).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cccmr_model.metrics import SUBTYPE_NAMES as SUBTYPES  # the order of `subtype` indices


@dataclass(frozen=True)
class Vendor:
    name: str
    manufacturer: str
    models: tuple[tuple[str, float], ...]  # (ManufacturerModelName, field strength T)
    descriptions: dict[str, str]  # sequence -> SeriesDescription
    enhanced: bool  # one multi-frame file per series
    rescale: bool  # writes RescaleSlope/Intercept
    slope_range: tuple[float, float]  # real-world = stored * slope (when rescale)
    stored_peak: tuple[float, float]  # range of the stored value of bright blood in cine
    filename: str  # classic file naming


VENDORS: dict[str, Vendor] = {
    "siemens": Vendor(
        name="siemens",
        manufacturer="SIEMENS",
        models=(("MAGNETOM Aera", 1.5), ("MAGNETOM Avanto_fit", 1.5), ("MAGNETOM Skyra", 3.0), ("MAGNETOM Vida", 3.0)),
        descriptions={
            "cine_sax": "CINE_TF2D_SAX_RETRO",
            "cine_4ch": "CINE_TF2D_4CH_RETRO",
            "lge_sax": "DE_PSIR_SAX_MAG",
        },
        enhanced=False,
        rescale=False,
        slope_range=(1.0, 1.0),
        stored_peak=(500.0, 900.0),
        filename="IM-{index:04d}.dcm",
    ),
    "ge": Vendor(
        name="ge",
        manufacturer="GE MEDICAL SYSTEMS",
        models=(("SIGNA Artist", 1.5), ("Optima MR450w", 1.5), ("Discovery MR750", 3.0), ("SIGNA Premier", 3.0)),
        descriptions={"cine_sax": "FIESTA CINE SAX", "cine_4ch": "FIESTA CINE 4CH", "lge_sax": "MDE SAX"},
        enhanced=False,
        rescale=True,
        slope_range=(1.0, 1.0),
        stored_peak=(1200.0, 2600.0),
        filename="I{index:04d}",
    ),
    "philips": Vendor(
        name="philips",
        manufacturer="Philips Medical Systems",
        models=(("Ingenia", 1.5), ("Achieva", 1.5), ("Ingenia Elition X", 3.0), ("Ingenia CX", 3.0)),
        descriptions={"cine_sax": "BTFE_BH SA stack", "cine_4ch": "BTFE_BH 4CH", "lge_sax": "PSIR_TFE SA LGE"},
        enhanced=True,
        rescale=True,
        slope_range=(0.6, 3.2),
        stored_peak=(1500.0, 3600.0),
        filename="IM_{index:04d}",
    ),
}


@dataclass(frozen=True)
class Site:
    """One hospital: its scanners, its patients and its protocol."""

    name: str
    vendor_mix: dict[str, float]
    prevalence: float  # fraction of patients (label 1)
    subtype_mix: dict[str, float]
    slice_thickness: tuple[float, ...]  # cine SAX thickness choices, mm
    snr: float  # blood signal / noise sigma in cine
    lge_missing: float  # fraction of subjects without an LGE series (cine-only)


SITES: dict[str, Site] = {
    "anzhen": Site(
        name="anzhen",
        vendor_mix={"siemens": 0.55, "philips": 0.3, "ge": 0.15},
        prevalence=0.6,
        subtype_mix={"HCM": 0.35, "DCM": 0.25, "NDLVC": 0.15, "RCM": 0.1, "ARVC": 0.15},
        slice_thickness=(8.0, 8.0, 6.0),
        snr=26.0,
        lge_missing=0.0,
    ),
    "lanzhou": Site(
        name="lanzhou",
        vendor_mix={"ge": 0.5, "philips": 0.4, "siemens": 0.1},
        prevalence=0.45,
        subtype_mix={"HCM": 0.15, "DCM": 0.3, "NDLVC": 0.3, "RCM": 0.15, "ARVC": 0.1},
        slice_thickness=(10.0, 8.0),
        snr=18.0,
        lge_missing=0.05,
    ),
}


def site_profile(name: str) -> Site:
    """The named site, or for an unknown name a deterministic profile derived from the name."""
    if name in SITES:
        return SITES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    vendors = rng.dirichlet(np.full(len(VENDORS), 0.8))
    subtypes = rng.dirichlet(np.full(len(SUBTYPES), 1.5))
    return Site(
        name=name,
        vendor_mix=dict(zip(VENDORS, map(float, vendors), strict=True)),
        prevalence=float(rng.uniform(0.35, 0.65)),
        subtype_mix=dict(zip(SUBTYPES, map(float, subtypes), strict=True)),
        slice_thickness=(float(rng.choice([6.0, 8.0, 10.0])),),
        snr=float(rng.uniform(16.0, 28.0)),
        lge_missing=0.0,
    )


def pooled_site(sites: list[Site], name: str = "test") -> Site:
    """A held-out population mixing the given sites equally (the test set)."""
    vendor_mix = {v: float(np.mean([s.vendor_mix.get(v, 0.0) for s in sites])) for v in VENDORS}
    subtype_mix = {t: float(np.mean([s.subtype_mix.get(t, 0.0) for s in sites])) for t in SUBTYPES}
    return Site(
        name=name,
        vendor_mix=vendor_mix,
        prevalence=float(np.mean([s.prevalence for s in sites])),
        subtype_mix=subtype_mix,
        slice_thickness=tuple(t for s in sites for t in s.slice_thickness),
        snr=float(np.mean([s.snr for s in sites])),
        lge_missing=0.0,
    )


def choose(rng: np.random.Generator, mix: dict[str, float]) -> str:
    names = list(mix)
    weights = np.asarray([mix[n] for n in names], float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]
