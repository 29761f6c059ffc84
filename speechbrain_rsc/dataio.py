"""SpeechBrain datasets over the prepared ICBHI manifests.

Example
-------
>>> sorted(DATASET_KEYS)
['id', 'prompt', 'sig', 'target']
"""

import csv
import logging
import os
import shutil
import tempfile
from pathlib import Path

import soundfile
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.distributed import run_on_main

from speechbrain_rsc.atomic import with_umask_mode
from speechbrain_rsc.data.cache import ManifestError, check_unchanged
from speechbrain_rsc.data.schema import CLASS_NAMES, N_CLASSES
from speechbrain_rsc.errors import RecipeError

logger = logging.getLogger(__name__)

DATASET_KEYS = ("id", "sig", "target", "prompt")
SYNTHETIC = "synthetic"


class DataFolderError(RecipeError, FileNotFoundError):
    """The ``data_folder`` given does not exist."""


def resolve_data_folder(data_folder, synthetic_folder, recordings=60, seed=0):
    """Return the ICBHI folder to prepare, making the synthetic one if asked.

    ``data_folder: synthetic`` in a YAML selects the built-in synthetic
    ICBHI-format dataset of ``recordings`` recordings drawn with ``seed``.
    It is generated once into ``synthetic_folder/recordings<N>_seed<S>``
    (written to a temporary folder and renamed, so a crash leaves nothing
    behind), by the main process only under DDP; other sizes and seeds get
    their own folders beside it.

    Arguments
    ---------
    data_folder : str
        A real ICBHI folder, or ``"synthetic"``.
    synthetic_folder : str
        Where the synthetic datasets live.
    recordings : int
        Size of the synthetic dataset.
    seed : int
        Seed of the synthetic dataset.

    Returns
    -------
    str
        ``data_folder``, or the synthetic dataset's folder.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> path = resolve_data_folder("synthetic", folder, recordings=2, seed=3)
    >>> Path(path).name, len(list(Path(path).rglob("*.wav")))
    ('recordings2_seed3', 2)
    """
    if str(data_folder) != SYNTHETIC:
        if not os.path.isdir(data_folder):
            raise DataFolderError(f"data_folder {data_folder} does not exist")
        return str(data_folder)
    target = Path(synthetic_folder) / f"recordings{int(recordings)}_seed{seed}"
    run_on_main(_make_synthetic, args=[target, recordings, seed])
    return str(target)


def _make_synthetic(target, recordings, seed):
    from speechbrain_rsc.data.synthetic import make_synthetic_icbhi

    target = Path(target)
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".synthetic-")
    with_umask_mode(tmp)
    try:
        make_synthetic_icbhi(tmp, recordings=recordings, seed=seed)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            return  # another process wrote the same dataset first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"Synthetic ICBHI dataset written to {target}")


def dataio_prep(manifests, sample_rate):
    """Build one DynamicItemDataset per manifest.

    Arguments
    ---------
    manifests : dict
        Split name -> CSV path written by ``prepare_icbhi``.
    sample_rate : int
        The rate the model expects; the cached cycles must have it.

    Returns
    -------
    dict
        Split name -> dataset yielding ``id``, ``sig`` (float waveform),
        ``target`` (the int64 ``label``) and ``prompt`` (BTS sentence).

    Raises
    ------
    ManifestError
        For a manifest edited since its preparation wrote it
        (:func:`~speechbrain_rsc.data.cache.check_unchanged`), or a
        row whose label is not a class or whose WAV is missing, unreadable
        or at another rate than ``sample_rate`` (:func:`check_rows`).
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        sig, _ = soundfile.read(wav, dtype="float32")
        return torch.from_numpy(sig)

    @sb.utils.data_pipeline.takes("label")
    @sb.utils.data_pipeline.provides("target")
    def label_pipeline(label):
        return torch.tensor([int(label)])

    datasets = {}
    for split, csv_path in manifests.items():
        check_unchanged(csv_path)
        check_rows(csv_path, sample_rate)
        dataset = _from_csv(csv_path)
        datasets[split] = dataset
        if len(dataset) == 0:
            continue
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(list(DATASET_KEYS))
    return datasets


def _from_csv(csv_path):
    # SpeechBrain cannot build a dataset without rows (valid_fraction 0):
    # an empty list stands in, with no items to load.
    with open(csv_path, encoding="utf-8") as f:
        has_rows = sum(1 for line in f if line.strip()) > 1
    return DynamicItemDataset.from_csv(csv_path) if has_rows else []


def check_rows(csv_path, sample_rate):
    """Refuse a manifest unless every row has a class label 0-3 and a
    readable WAV at ``sample_rate``.

    Arguments
    ---------
    csv_path : str or Path
        A manifest (``ID``, ``wav`` and ``label`` columns at least).
    sample_rate : int
        The rate the model expects.

    Raises
    ------
    ManifestError
        Naming the file, the line, the cycle and what to do.

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> _ = path.write_text("ID,wav,label" + chr(10) + "a_0,a.wav,7")
    >>> try:
    ...     check_rows(path, 16000)
    ... except ManifestError as error:
    ...     print(str(error).split(": ")[1].split(";")[0])
    label '7' is not a class 0-3 (normal, crackle, wheeze, both)
    """
    with open(csv_path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = {"ID", "wav", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(
                f"{csv_path}: no {', '.join(sorted(missing))} column; "
                "give a manifest written by icbhi_prepare.py"
            )
        for row in reader:
            where = f"{csv_path}, line {reader.line_num} (cycle {row['ID']})"
            _check_label(row["label"], where)
            _check_wav(row["wav"], sample_rate, where)


def _check_label(label, where):
    try:
        ok = int(label) in range(N_CLASSES)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ManifestError(
            f"{where}: label {label!r} is not a class 0-{N_CLASSES - 1} "
            f"({', '.join(CLASS_NAMES)}); the manifest was edited by hand: "
            "prepare the data again (icbhi_prepare.py)"
        )


def _check_wav(wav, sample_rate, where):
    if not wav or not os.path.isfile(wav):
        raise ManifestError(
            f"{where}: the cycle {wav!r} does not exist; prepare the data "
            "again (icbhi_prepare.py) or restore the cycle cache"
        )
    try:
        rate = soundfile.info(wav).samplerate
    except (RuntimeError, OSError) as error:  # LibsndfileError
        raise ManifestError(
            f"{where}: the cycle {wav} cannot be read ({error}); prepare "
            "the data again (icbhi_prepare.py)"
        ) from None
    if rate != sample_rate:
        raise ManifestError(
            f"{where}: cycles are cached at {rate} Hz ({wav}) but the model "
            f"expects {sample_rate} Hz; prepare the data at {sample_rate} Hz"
        )
