"""Planning a preparation: which recordings to cut, which split they go to.

:func:`plan_recordings` pairs each recording on disk with its line of the
split file and lists what is left out: recordings that the split file
lists but that are absent from disk, and the recordings skipped for their
name or missing files. A listed stem absent on disk that differs from
exactly one unlisted on-disk stem only in the device part is matched to
it. :func:`choose_valid_patients` draws the train patients of the
patient-disjoint validation split.

Example
-------
>>> from speechbrain_rsc.data.schema import parse_stem
>>> job = Job(parse_stem("101_1b1_Al_sc_Meditron"), "train", None, None)
>>> job.stem.patient, job.split
(101, 'train')
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechbrain_rsc.data.icbhi import (
    Skip,
    match_renamed,
    read_demographics,
    read_diagnoses,
    read_split,
)
from speechbrain_rsc.data.schema import parse_stem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One recording to cut: its parsed stem, split and files."""

    stem: object  # schema.Stem
    split: str
    wav: Path
    txt: Path


@dataclass(frozen=True)
class Tables:
    """The split, demographics and diagnosis files of an ICBHI copy, read.

    ``split`` maps a stem to ``"train"`` / ``"test"``, ``patients`` a
    patient to its :class:`~speechbrain_rsc.data.icbhi.Patient`,
    ``diagnoses`` a patient to its diagnosis.
    """

    split: dict
    patients: dict
    diagnoses: dict


@dataclass(frozen=True)
class Plan:
    """The recordings to cut, and those left out before cutting.

    ``jobs`` are sorted by stem; ``skips`` lists the recordings left out,
    with the reason; ``renamed`` a ``{"split_file_stem", "disk_stem"}``
    record of every device-renamed match; ``missing`` the stems listed in
    the split file and absent from disk.
    """

    jobs: list
    skips: list
    renamed: list
    missing: list


def read_tables(layout):
    """Read the split, demographics and diagnosis files of ``layout``.

    Raises
    ------
    ICBHIFormatError
        On a missing file or a malformed line.
    """
    return Tables(
        read_split(layout.split_file),
        read_demographics(layout.demographics_file),
        read_diagnoses(layout.diagnosis_file),
    )


def plan_recordings(split, files, layout):
    """Pair each on-disk recording with its split; list what is left out.

    Arguments
    ---------
    split : dict
        Stem -> ``"train"`` / ``"test"`` (:func:`read_split`).
    files : dict
        Stem -> RecordingFiles (:func:`discover_recordings`).
    layout : Layout
        For messages.

    Returns
    -------
    Plan
    """
    matches, missing = match_renamed(split, files)
    listed_as = {stem: stem for stem in split if stem in files}
    listed_as.update({disk: listed for listed, disk in matches.items()})
    for listed, disk in matches.items():
        logger.warning(
            "%s lists %s, absent on disk; using %s (differs only in the "
            "device)",
            layout.split_file,
            listed,
            disk,
        )
    if missing:
        logger.warning(
            "%s lists %d recordings absent from %s (e.g. %s); they are left "
            "out (all listed in summary.json)",
            layout.split_file,
            len(missing),
            layout.audio_folder,
            missing[0],
        )
    jobs, skips = [], []
    for stem, found in files.items():
        where = str(found.wav or found.txt)
        try:
            parsed = parse_stem(stem)
        except ValueError as error:
            skips.append(Skip("bad file name", where, None, str(error)))
            continue
        if stem not in listed_as:
            skips.append(
                Skip("not in split file", where, None, str(layout.split_file))
            )
        elif found.wav is None:
            skips.append(Skip("missing wav", where))
        elif found.txt is None:
            skips.append(Skip("missing annotation file", where))
        else:
            jobs.append(
                Job(parsed, split[listed_as[stem]], found.wav, found.txt)
            )
    for skip in skips:
        logger.warning("Skipped recording %s", skip)
    renamed = [
        {"split_file_stem": listed, "disk_stem": disk}
        for listed, disk in matches.items()
    ]
    return Plan(jobs, skips, renamed, missing)


def choose_valid_patients(jobs, fraction, seed):
    """Draw the train patients that form the validation split.

    ``round(fraction * n)`` of the ``n`` train patients (at least one when
    ``fraction > 0``, and never all of them) are drawn with ``seed``,
    preferably among patients with no test recording. The same inputs
    always give the same patients.

    Returns
    -------
    set of int

    Example
    -------
    >>> from speechbrain_rsc.data.schema import parse_stem
    >>> jobs = [
    ...     Job(parse_stem(f"{p}_1b1_Al_sc_Meditron"), "train", None, None)
    ...     for p in range(101, 111)
    ... ]
    >>> len(choose_valid_patients(jobs, 0.2, seed=1))
    2
    >>> choose_valid_patients(jobs, 0.0, seed=1)
    set()
    """
    train = sorted({j.stem.patient for j in jobs if j.split == "train"})
    test = {j.stem.patient for j in jobs if j.split == "test"}
    if fraction == 0:
        return set()
    count = min(max(1, round(fraction * len(train))), len(train) - 1)
    if count <= 0:
        logger.warning(
            "valid_fraction %s: only %d train patient(s), the validation "
            "split is empty",
            fraction,
            len(train),
        )
        return set()
    pool = [p for p in train if p not in test]
    if len(pool) < count:
        pool = train
    rng = np.random.default_rng(seed)
    return {int(p) for p in rng.choice(pool, size=count, replace=False)}
