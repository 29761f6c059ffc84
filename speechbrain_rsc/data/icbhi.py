r"""Parsing the ICBHI 2017 files: layouts, split, annotations, metadata.

Two layouts are recognised under a data folder (searched up to three
levels deep, so an unpacked Kaggle archive works as is):

- official: ``ICBHI_final_database/`` (``*.wav`` + ``*.txt``) with
  ``ICBHI_challenge_train_test.txt``,
  ``ICBHI_Challenge_demographic_information.txt`` and
  ``ICBHI_Challenge_diagnosis.txt`` beside it (or in a folder above it);
- Kaggle re-upload: ``audio_and_txt_files/`` with ``patient_diagnosis.csv``
  and ``demographic_info.txt`` beside it or above it. It has no split file,
  so one must be given.

Every reader names the file and the line of any problem. Problems that
make the dataset untrustworthy as a whole raise :class:`ICBHIFormatError`;
problems of one annotation line come back as :class:`Skip` records, which
``prepare_icbhi`` counts, logs and writes to ``summary.json``.

:func:`read_tables` reads the split, demographics and diagnosis files of a
layout; :func:`plan_recordings` pairs each recording on disk with its line
of the split file (a listed stem absent on disk is matched to a stem that
differs only in the device part, see :func:`match_renamed`) and lists what
is left out.

Example
-------
>>> path = getfixture("tmp_path") / "101_1b1_Al_sc_Meditron.txt"
>>> _ = path.write_bytes(b"0.036\t0.579\t0\t1\r\n0.579 0.5 0 0\r\n")
>>> cycles, skips = read_annotations(path)
>>> cycles[0].label, skips[0].reason, skips[0].line
(2, 'end before start', 2)
"""

import logging
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from speechbrain_rsc.data.schema import label_from_flags, parse_stem
from speechbrain_rsc.errors import RecipeError

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "test")
# layout name -> (audio folder, split file, demographics, diagnosis)
LAYOUTS = {
    "official": (
        "ICBHI_final_database",
        "ICBHI_challenge_train_test.txt",
        "ICBHI_Challenge_demographic_information.txt",
        "ICBHI_Challenge_diagnosis.txt",
    ),
    "kaggle": (
        "audio_and_txt_files",
        None,
        "demographic_info.txt",
        "patient_diagnosis.csv",
    ),
}
SEARCH_DEPTH = 3  # how deep below data_folder the audio folder may be


class ICBHIFormatError(RecipeError, ValueError):
    """The ICBHI files cannot be trusted as a whole (layout, split, ...)."""


@dataclass(frozen=True)
class Skip:
    """A recording or cycle left out, with why and where.

    Example
    -------
    >>> Skip("malformed annotation line", "a.txt", 3, "'0.1 x 0 0'").as_dict()
    {'reason': 'malformed annotation line', 'file': 'a.txt', 'line': 3, \
'detail': "'0.1 x 0 0'"}
    """

    reason: str
    file: str
    line: int | None = None
    detail: str = ""

    def as_dict(self):
        """The record as a JSON-ready dict."""
        return asdict(self)

    def __str__(self):
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}" + (
            f" ({self.detail})" if self.detail else ""
        )


@dataclass(frozen=True)
class Layout:
    """Where the files of one ICBHI copy are."""

    name: str
    audio_folder: Path
    split_file: Path | None
    demographics_file: Path
    diagnosis_file: Path


@dataclass(frozen=True)
class Cycle:
    """One annotation line: a respiratory cycle and its flags."""

    index: int  # 0-based index of the line in the file
    start: float
    end: float
    crackle: int
    wheeze: int

    @property
    def line(self):
        """1-based line number, for messages."""
        return self.index + 1

    @property
    def label(self):
        """Class index: 0 normal, 1 crackle, 2 wheeze, 3 both."""
        return label_from_flags(self.crackle, self.wheeze)


@dataclass(frozen=True)
class Patient:
    """Demographics of one patient; ``None`` / ``""`` where ``NA``."""

    id: int
    age: float | None
    sex: str
    bmi: float | None
    child_weight: float | None
    child_height: float | None


def read_lines(path):
    r"""Read a small text file as lines, whatever its line ends.

    Handles LF, CRLF and CR, a UTF-8 byte order mark and a missing final
    newline.

    Raises
    ------
    ICBHIFormatError
        If the file is missing or not UTF-8 text.

    Example
    -------
    >>> path = getfixture("tmp_path") / "d.txt"
    >>> _ = path.write_bytes(b"101\tURTI\r\n102\tHealthy")
    >>> read_lines(path)
    ['101\tURTI', '102\tHealthy']
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ICBHIFormatError(f"{path}: cannot read ({error})") from error
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise ICBHIFormatError(f"{path}: not a UTF-8 text file") from error


def _search_dirs(root, name, depth):
    """Folders called ``name`` at ``root`` or up to ``depth`` levels below."""
    found, level = [], [Path(root)]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith("."):
                    (found if entry.name == name else below).append(
                        Path(entry.path)
                    )
        level = below
    return found


def _find_upwards(start, root, name):
    """``name`` in ``start`` or a folder above it, up to ``root``."""
    folder = start
    while True:
        if (folder / name).is_file():
            return folder / name
        if folder == root or folder.parent == folder:
            return None
        folder = folder.parent


def find_layout(data_folder, split_file=None):
    """Locate the audio folder and the metadata files of an ICBHI copy.

    Arguments
    ---------
    data_folder : str or Path
        The unpacked official download or Kaggle archive.
    split_file : str or Path, optional
        A ``stem<TAB>train|test`` file overriding the official one
        (required for the Kaggle layout).

    Returns
    -------
    Layout

    Raises
    ------
    ICBHIFormatError
        If no layout or more than one is found, or a file is missing.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "ICBHI_final_database").mkdir()
    >>> for name in LAYOUTS["official"][1:]:
    ...     _ = (root / name).write_text("")
    >>> find_layout(root).name
    'official'
    """
    root = Path(data_folder).absolute()
    if not root.is_dir():
        raise ICBHIFormatError(f"data_folder {root} is not a folder")
    found = [
        (name, folder)
        for name, files in LAYOUTS.items()
        for folder in _search_dirs(root, files[0], SEARCH_DEPTH)
    ]
    if len(found) != 1:
        what = ", ".join(str(f) for _, f in found) or "none"
        wanted = " or ".join(f"{f[0]}/" for f in LAYOUTS.values())
        raise ICBHIFormatError(
            f"{root}: expected exactly one {wanted} folder, found {what}"
        )
    name, audio = found[0]
    _, split_name, demo_name, diag_name = LAYOUTS[name]
    if split_file is not None:
        split_path = Path(split_file).absolute()
        if not split_path.is_file():
            raise ICBHIFormatError(f"split_file {split_path} does not exist")
    elif split_name is None:
        raise ICBHIFormatError(
            f"{audio}: the Kaggle layout has no train/test split file; pass "
            "split_file (the official ICBHI_challenge_train_test.txt)"
        )
    else:
        split_path = _find_upwards(audio.parent, root, split_name)
        if split_path is None:
            raise ICBHIFormatError(
                f"{root}: official split file {split_name} not found next "
                f"to {audio.name}/ (or pass split_file)"
            )
    meta = {}
    for key, file_name in (
        ("demographics", demo_name),
        ("diagnosis", diag_name),
    ):
        meta[key] = _find_upwards(audio.parent, root, file_name)
        if meta[key] is None:
            raise ICBHIFormatError(
                f"{root}: {key} file {file_name} not found next to "
                f"{audio.name}/ or in a folder above it"
            )
    return Layout(
        name, audio, split_path, meta["demographics"], meta["diagnosis"]
    )


def read_split(path):
    r"""Read a split file of ``stem<TAB>train|test`` lines.

    A stem listed twice with the same split is accepted with a warning;
    with different splits it is an error. Blank lines are ignored.

    Returns
    -------
    dict
        Stem -> ``"train"`` or ``"test"``, in file order.

    Raises
    ------
    ICBHIFormatError
        On a line that is not two fields with ``train`` or ``test``, or a
        stem listed in both splits.

    Example
    -------
    >>> path = getfixture("tmp_path") / "split.txt"
    >>> _ = path.write_text("101_1b1_Al_sc_Meditron\ttest\n")
    >>> read_split(path)
    {'101_1b1_Al_sc_Meditron': 'test'}
    """
    split, first_line = {}, {}
    for number, text in enumerate(read_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1].lower() not in SPLIT_NAMES:
            raise ICBHIFormatError(
                f"{path}:{number}: expected 'stem<TAB>train|test', got {text!r}"
            )
        stem, name = fields[0], fields[1].lower()
        if stem in split:
            if split[stem] != name:
                raise ICBHIFormatError(
                    f"{path}:{number}: {stem} is listed as {name} here and "
                    f"as {split[stem]} on line {first_line[stem]}"
                )
            logger.warning(
                "%s:%d: %s listed twice (also line %d), same split",
                path,
                number,
                stem,
                first_line[stem],
            )
            continue
        split[stem], first_line[stem] = name, number
    if not split:
        raise ICBHIFormatError(f"{path}: the split file lists no recording")
    return split


def _number(text, path, number, what):
    """A float from a metadata field; ``NA`` gives ``None``."""
    if text == "NA":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ICBHIFormatError(f"{path}:{number}: {what} {text!r} is invalid")
    return value


def _patient_id(text, path, number):
    if not text.isdigit():
        raise ICBHIFormatError(
            f"{path}:{number}: patient id {text!r} is not a number"
        )
    return int(text)


def _fields(text):
    """Tab-separated fields, or whitespace-separated when there is no tab."""
    if "\t" in text:
        return [field.strip() for field in text.rstrip().split("\t")]
    return text.split()


def read_demographics(path):
    r"""Read the demographics: id, age, sex, adult BMI, child weight, height.

    Six tab- or whitespace-separated columns, no header, ``NA`` for a
    missing value (patient 223 is all ``NA``).

    Returns
    -------
    dict
        Patient id -> :class:`Patient`.

    Raises
    ------
    ICBHIFormatError
        On a line without six fields, a bad number or sex code, or a
        patient listed twice.

    Example
    -------
    >>> path = getfixture("tmp_path") / "demo.txt"
    >>> text = "101\t3\tF\tNA\t19\t99\n223 NA NA NA NA NA\n"
    >>> _ = path.write_text(text)
    >>> patients = read_demographics(path)
    >>> patients[101].age, patients[101].sex, patients[223].age
    (3.0, 'F', None)
    """
    patients = {}
    for number, text in enumerate(read_lines(path), start=1):
        fields = _fields(text)
        if not fields:
            continue
        if len(fields) != 6:
            raise ICBHIFormatError(
                f"{path}:{number}: expected 6 fields (id, age, sex, adult "
                f"BMI, child weight, child height), got {text!r}"
            )
        pid = _patient_id(fields[0], path, number)
        if pid in patients:
            raise ICBHIFormatError(f"{path}:{number}: patient {pid} twice")
        sex = fields[2]
        if sex not in ("M", "F", "NA"):
            raise ICBHIFormatError(
                f"{path}:{number}: sex {sex!r} is not M, F or NA"
            )
        age, bmi, weight, height = (
            _number(fields[i], path, number, what)
            for i, what in (
                (1, "age"),
                (3, "BMI"),
                (4, "weight"),
                (5, "height"),
            )
        )
        sex = "" if sex == "NA" else sex
        patients[pid] = Patient(pid, age, sex, bmi, weight, height)
    return patients


def read_diagnoses(path):
    r"""Read ``id<TAB>diagnosis`` (official) or ``id,diagnosis`` (Kaggle).

    A header line is accepted as the first line only.

    Returns
    -------
    dict
        Patient id -> diagnosis.

    Example
    -------
    >>> path = getfixture("tmp_path") / "patient_diagnosis.csv"
    >>> _ = path.write_text("101,URTI\n102,Healthy")
    >>> read_diagnoses(path)
    {101: 'URTI', 102: 'Healthy'}
    """
    diagnoses = {}
    for number, text in enumerate(read_lines(path), start=1):
        if not text.strip():
            continue
        sep = "\t" if "\t" in text else ","
        fields = [field.strip() for field in text.split(sep)]
        if len(fields) != 2 or not fields[1]:
            raise ICBHIFormatError(
                f"{path}:{number}: expected 'id<TAB>diagnosis', got {text!r}"
            )
        if number == 1 and not fields[0].isdigit():
            logger.info("%s: header line %r", path, text)
            continue
        pid = _patient_id(fields[0], path, number)
        if pid in diagnoses:
            raise ICBHIFormatError(f"{path}:{number}: patient {pid} twice")
        diagnoses[pid] = fields[1]
    return diagnoses


def _parse_cycle(fields, index):
    """A :class:`Cycle` from 4 fields, or the reason it is not one."""
    if len(fields) != 4:
        return "malformed annotation line"
    try:
        start, end = float(fields[0]), float(fields[1])
    except ValueError:
        return "malformed annotation line"
    if fields[2] not in ("0", "1") or fields[3] not in ("0", "1"):
        return "malformed annotation line"
    if not (math.isfinite(start) and math.isfinite(end)):
        return "malformed annotation line"
    if start < 0:
        return "negative start"
    if end < start:
        return "end before start"
    if end == start:
        return "zero-length cycle"
    return Cycle(index, start, end, int(fields[2]), int(fields[3]))


def read_annotations(path):
    r"""Read a cycle annotation file: ``start end crackle wheeze`` per line.

    Fields are separated by tabs or spaces; line ends may be LF or CRLF;
    blank lines hold no cycle and are passed over (they keep their line
    number, so a cycle's index is always its line number minus one).

    Arguments
    ---------
    path : str or Path
        A recording's ``.txt`` file.

    Returns
    -------
    cycles : list of Cycle
        The valid lines.
    skips : list of Skip
        One per invalid line: ``malformed annotation line`` (not four
        fields, a non-number, a flag other than 0/1), ``negative start``,
        ``end before start`` or ``zero-length cycle``.

    Raises
    ------
    ICBHIFormatError
        If the file cannot be read as text (the caller skips the
        recording).

    Example
    -------
    >>> path = getfixture("tmp_path") / "104_1b1_Al_sc_Litt3200.txt"
    >>> _ = path.write_text("0 1.8771 1 1\n1.8771 oops 0 0\n")
    >>> cycles, skips = read_annotations(path)
    >>> cycles
    [Cycle(index=0, start=0.0, end=1.8771, crackle=1, wheeze=1)]
    >>> skips[0].reason, skips[0].line, skips[0].detail
    ('malformed annotation line', 2, "'1.8771 oops 0 0'")
    """
    cycles, skips = [], []
    for index, text in enumerate(read_lines(path)):
        fields = text.split()
        if not fields:
            continue
        parsed = _parse_cycle(fields, index)
        if isinstance(parsed, Cycle):
            cycles.append(parsed)
        else:
            skips.append(Skip(parsed, str(path), index + 1, repr(text)))
    return cycles, skips


@dataclass
class RecordingFiles:
    """The ``.wav`` and ``.txt`` found on disk for one stem."""

    wav: Path | None = None
    txt: Path | None = None


def discover_recordings(audio_folder):
    """Find every ``.wav`` and ``.txt`` under the audio folder by stem.

    Arguments
    ---------
    audio_folder : Path
        ``ICBHI_final_database/`` or ``audio_and_txt_files/`` (searched
        recursively).

    Returns
    -------
    dict
        Stem -> :class:`RecordingFiles`, sorted by stem.

    Raises
    ------
    ICBHIFormatError
        If the same stem has two ``.wav`` (or two ``.txt``) files in
        different places: which one is the recording is unknowable.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> _ = (root / "101_1b1_Al_sc_Meditron.txt").write_text("")
    >>> discover_recordings(root)["101_1b1_Al_sc_Meditron"].wav is None
    True
    """
    found = defaultdict(RecordingFiles)
    for dirpath, dirnames, filenames in os.walk(audio_folder):
        dirnames.sort()
        for name in sorted(filenames):
            stem, suffix = os.path.splitext(name)
            suffix = suffix.lower()
            if suffix not in (".wav", ".txt"):
                continue
            path = Path(dirpath) / name
            files = found[stem]
            other = getattr(files, suffix[1:])
            if other is not None:
                raise ICBHIFormatError(
                    f"recording {stem} is on disk twice: {other} and {path}; "
                    "keep one copy"
                )
            setattr(files, suffix[1:], path)
    return dict(sorted(found.items()))


def match_renamed(listed, on_disk):
    """Match split stems absent on disk to files renamed in the device part.

    A listed stem absent on disk is matched to an on-disk stem that is not
    listed and differs only in the device (same patient, recording index,
    location and mode), when exactly one such candidate exists and no
    other listed stem claims it.

    Arguments
    ---------
    listed : iterable of str
        Stems named by the split file.
    on_disk : iterable of str
        Stems found on disk.

    Returns
    -------
    matches : dict
        Listed stem -> on-disk stem.
    missing : list of str
        Listed stems absent on disk and not matched, sorted.

    Example
    -------
    >>> match_renamed(
    ...     ["226_1b1_Pl_sc_Meditron", "101_1b1_Al_sc_Meditron"],
    ...     ["226_1b1_Pl_sc_LittC2SE"],
    ... )
    ({'226_1b1_Pl_sc_Meditron': '226_1b1_Pl_sc_LittC2SE'}, \
['101_1b1_Al_sc_Meditron'])
    """
    listed, on_disk = set(listed), set(on_disk)
    absent = sorted(listed - on_disk)
    candidates = defaultdict(list)
    for stem in sorted(on_disk - listed):
        try:
            candidates[parse_stem(stem).device_free].append(stem)
        except ValueError:
            continue
    claims = defaultdict(list)
    for stem in absent:
        try:
            found = candidates.get(parse_stem(stem).device_free, [])
        except ValueError:
            continue
        if len(found) == 1:
            claims[found[0]].append(stem)
    matches = {
        stems[0]: disk for disk, stems in claims.items() if len(stems) == 1
    }
    missing = [stem for stem in absent if stem not in matches]
    return dict(sorted(matches.items())), missing


@dataclass(frozen=True)
class Job:
    """One recording to cut: its parsed stem, split and files.

    Example
    -------
    >>> job = Job(parse_stem("101_1b1_Al_sc_Meditron"), "train", None, None)
    >>> job.stem.patient, job.split
    (101, 'train')
    """

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
