"""SpeechBrain datasets over the prepared ICBHI manifests.

Example
-------
>>> sorted(DATASET_KEYS)
['id', 'prompt', 'sig', 'target']
"""

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

logger = logging.getLogger(__name__)

DATASET_KEYS = ("id", "sig", "target", "prompt")
SYNTHETIC = "synthetic"


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
            raise FileNotFoundError(f"data_folder {data_folder} does not exist")
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
        dataset = _from_csv(csv_path)
        datasets[split] = dataset
        if len(dataset) == 0:
            continue
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(list(DATASET_KEYS))
        _check_rate(dataset, sample_rate, csv_path)
    return datasets


def _from_csv(csv_path):
    # SpeechBrain cannot build a dataset without rows (valid_fraction 0):
    # an empty list stands in, with no items to load.
    with open(csv_path, encoding="utf-8") as f:
        has_rows = sum(1 for line in f if line.strip()) > 1
    return DynamicItemDataset.from_csv(csv_path) if has_rows else []


def _check_rate(dataset, sample_rate, csv_path):
    first = next(iter(dataset.data.values()))["wav"]
    rate = soundfile.info(first).samplerate
    if rate != sample_rate:
        raise ValueError(
            f"{csv_path}: cycles are cached at {rate} Hz but the model "
            f"expects {sample_rate} Hz; prepare the data at {sample_rate} Hz"
        )
