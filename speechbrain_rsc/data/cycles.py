"""Cutting ICBHI recordings into fixed-length cycles, cached as WAV files.

The signal functions follow the de facto ICBHI pipeline (Patch-Mix CL,
reused by BTS):

1. resample the whole recording to the target rate;
2. apply a linear fade-in and fade-out of ``sr / 16`` samples to it;
3. cut each cycle ``[int(start * sr) : int(end * sr)]``, clamped to the
   recording;
4. standardise the cycle to a fixed duration: ``repeat`` tiles it and fades
   out the last ``sr / 16`` samples, ``zero`` centres it in zeros; longer
   cycles keep their first ``duration`` seconds.

Reading checks that a file is a mono, complete PCM WAV and raises
:class:`RecordingError` (a ``ValueError``) naming the file otherwise.

:func:`cut_all` cuts every cycle of a preparation once into a cycle cache
``cycles_<key>/``, one float32 WAV per cycle, ``<recording>_<index>.wav``,
in a pool of worker processes when it pays; the workers die with the
preparing process on Linux, even if it is killed with SIGKILL. Each cycle
is written to a temporary file and renamed (:func:`write_cycle`).

What happens to a cycle whose end is beyond the audio is the
``overrun`` option (:data:`OVERRUNS`): ``"clamp"`` cuts it to the audio's
end, as the reference code does for every cycle; ``"skip"`` skips it if it
overruns by more than ``END_TOLERANCE`` seconds and clamps it otherwise.
Every clamped cycle is listed in the result's ``clamped``.

Example
-------
>>> import numpy as np
>>> sr = 16
>>> recording = fade(np.ones(64, dtype=np.float32), fade_length(sr))
>>> cycle = cut(recording, start=0.5, end=1.0, sample_rate=sr)
>>> standardise(cycle, 20, pad="repeat", fade_out=fade_length(sr)).shape
(20,)
"""

import ctypes
import functools
import io
import logging
import multiprocessing
import os
import secrets
import signal
import struct
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional

from speechbrain_rsc.data.icbhi import ICBHIFormatError, Skip, read_annotations
from speechbrain_rsc.errors import RecipeError

logger = logging.getLogger(__name__)

FADE_RATIO = 16  # fades last sample_rate / FADE_RATIO samples
PADS = ("repeat", "zero")
END_TOLERANCE = 0.05  # seconds an annotation may overrun the audio
OVERRUNS = ("clamp", "skip")
MAX_WORKERS = 2  # about 1.5-2x faster than serial on 2 CPUs
POOL_MIN_RECORDINGS = 100  # below this a pool costs more than it saves
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class RecordingError(RecipeError, ValueError):
    """A recording that cannot be used: unreadable, not PCM, not mono..."""


def fade_length(sample_rate):
    """Number of samples of the pipeline's fades: ``int(sr / 16)``.

    Example
    -------
    >>> fade_length(16000), fade_length(44100)
    (1000, 2756)
    """
    return int(sample_rate / FADE_RATIO)


def _declared_data_bytes(path):
    """Return ``(offset, size)`` of the WAV ``data`` chunk from its header.

    Returns ``None`` when the header does not give a usable size (not a
    RIFF/WAVE file, or a streaming size of 0 or 0xFFFFFFFF).
    """
    with open(path, "rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        offset = 12
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            offset += 8
            if name == b"data":
                return None if size in (0, 0xFFFFFFFF) else (offset, size)
            offset += size + (size & 1)
            file.seek(offset)


def inspect_recording(path):
    """Check that ``path`` is a complete mono PCM WAV; return its info.

    Arguments
    ---------
    path : str or Path
        A ``.wav`` file.

    Returns
    -------
    soundfile._SoundFileInfo
        With ``samplerate``, ``frames``, ``channels``, ``subtype``.

    Raises
    ------
    RecordingError
        If the file is missing or unreadable, not a WAV, not PCM (e.g.
        float or mu-law), has more than one channel, or is shorter than its
        header declares (truncated).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = str(getfixture("tmp_path")) + "/a.wav"
    >>> sf.write(path, np.zeros(8000), 4000, subtype="PCM_24")
    >>> info = inspect_recording(path)
    >>> info.samplerate, info.frames, info.subtype
    (4000, 8000, 'PCM_24')
    """
    try:
        info = sf.info(str(path))
    except Exception as error:  # libsndfile raises several error types
        raise RecordingError(f"{path}: unreadable audio ({error})") from error
    if info.format != "WAV" or not info.subtype.startswith("PCM_"):
        raise RecordingError(
            f"{path}: not a PCM WAV file ({info.format} {info.subtype})"
        )
    if info.channels != 1:
        raise RecordingError(
            f"{path}: {info.channels} channels; ICBHI recordings are mono"
        )
    declared = _declared_data_bytes(path)
    if declared is not None:
        offset, size = declared
        held = os.path.getsize(path) - offset
        if held < size:
            raise RecordingError(
                f"{path}: truncated, the header declares {size} bytes of "
                f"audio but the file holds {held}"
            )
    if info.frames == 0:
        raise RecordingError(f"{path}: no audio samples")
    return info


def read_recording(path):
    """Read a checked mono PCM WAV as float32 in [-1, 1].

    Arguments
    ---------
    path : str or Path
        A ``.wav`` file of any PCM width and sample rate.

    Returns
    -------
    signal : numpy.ndarray
        1-D float32 samples.
    sample_rate : int

    Raises
    ------
    RecordingError
        See :func:`inspect_recording`.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = str(getfixture("tmp_path")) + "/a.wav"
    >>> sf.write(path, np.full(4, 0.5), 4000, subtype="PCM_16")
    >>> read_recording(path)
    (array([0.5, 0.5, 0.5, 0.5], dtype=float32), 4000)
    """
    info = inspect_recording(path)
    signal, sample_rate = sf.read(str(path), dtype="float32")
    if len(signal) != info.frames:
        raise RecordingError(
            f"{path}: read {len(signal)} samples, header says {info.frames}"
        )
    return signal, int(sample_rate)


def resample(signal, orig_rate, new_rate):
    """Resample a 1-D signal with ``torchaudio.functional.resample``.

    Arguments
    ---------
    signal : numpy.ndarray
        1-D float32 samples.
    orig_rate : int
        Its sample rate.
    new_rate : int
        The wanted sample rate.

    Returns
    -------
    numpy.ndarray
        float32, ``ceil(len * new_rate / orig_rate)`` samples; the input
        itself when the rates are equal.

    Example
    -------
    >>> import numpy as np
    >>> resample(np.zeros(4000, dtype=np.float32), 4000, 16000).shape
    (16000,)
    >>> resample(np.zeros(441, dtype=np.float32), 44100, 16000).shape
    (160,)
    """
    if orig_rate == new_rate:
        return signal
    tensor = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
    out = torchaudio.functional.resample(tensor, int(orig_rate), int(new_rate))
    return out.numpy()


def fade(signal, fade_in, fade_out=None):
    """Apply linear fades, as ``torchaudio.transforms.Fade(..., "linear")``.

    The fade-in multiplies the first samples by ``linspace(0, 1, fade_in)``
    and the fade-out the last by ``linspace(1, 0, fade_out)``; fades longer
    than the signal are shortened to it.

    Arguments
    ---------
    signal : numpy.ndarray
        1-D samples (not modified).
    fade_in : int
        Length of the fade-in in samples.
    fade_out : int, optional
        Length of the fade-out; defaults to ``fade_in``.

    Returns
    -------
    numpy.ndarray
        A faded float32 copy.

    Example
    -------
    >>> import numpy as np
    >>> fade(np.ones(7, dtype=np.float32), 3)
    array([0. , 0.5, 1. , 1. , 1. , 0.5, 0. ], dtype=float32)
    >>> fade(np.ones(4, dtype=np.float32), 0, 2)
    array([1., 1., 1., 0.], dtype=float32)
    """
    fade_out = fade_in if fade_out is None else fade_out
    out = np.array(signal, dtype=np.float32, copy=True)
    n_in, n_out = min(fade_in, len(out)), min(fade_out, len(out))
    if n_in > 0:
        out[:n_in] *= np.linspace(0, 1, n_in, dtype=np.float32)
    if n_out > 0:
        out[len(out) - n_out :] *= np.linspace(1, 0, n_out, dtype=np.float32)
    return out


def cycle_bounds(start, end, sample_rate, n_samples):
    """Sample indices ``[int(start * sr), int(end * sr))``, clamped.

    Example
    -------
    >>> cycle_bounds(0.579, 2.45, 16000, 10**6)
    (9264, 39200)
    >>> cycle_bounds(1.0, 3.0, 10, 25)
    (10, 25)
    """
    first = min(int(start * sample_rate), n_samples)
    last = min(int(end * sample_rate), n_samples)
    return first, last


def cut(signal, start, end, sample_rate):
    """Cut the cycle between ``start`` and ``end`` seconds, clamped.

    Arguments
    ---------
    signal : numpy.ndarray
        1-D samples of the whole (resampled, faded) recording.
    start, end : float
        Cycle bounds in seconds.
    sample_rate : int
        Rate of ``signal``.

    Returns
    -------
    numpy.ndarray
        A view of the samples; empty if the cycle lies past the end.

    Example
    -------
    >>> import numpy as np
    >>> cut(np.arange(10.0), 0.25, 0.6, sample_rate=10)
    array([2., 3., 4., 5.])
    >>> cut(np.arange(10.0), 0.8, 1.5, sample_rate=10)
    array([8., 9.])
    """
    first, last = cycle_bounds(start, end, sample_rate, len(signal))
    return signal[first:last]


def standardise(cycle, length, pad="repeat", fade_out=0):
    """Bring a cycle to exactly ``length`` samples.

    Arguments
    ---------
    cycle : numpy.ndarray
        1-D samples, at least one.
    length : int
        Target number of samples (``duration * sample_rate``).
    pad : str
        ``"repeat"``: tile the cycle ``ceil(length / len)`` times, crop to
        ``length`` and fade out the last ``fade_out`` samples linearly;
        ``"zero"``: centre it in zeros (the extra zero goes at the end).
        A cycle longer than ``length`` keeps its first ``length`` samples,
        with no fade, for either pad.
    fade_out : int
        Fade-out length for ``repeat`` (``sr / 16`` in the pipeline).

    Returns
    -------
    numpy.ndarray
        float32, ``length`` samples.

    Example
    -------
    >>> import numpy as np
    >>> x = np.array([1, 2, 3], dtype=np.float32)
    >>> standardise(x, 7, "repeat")
    array([1., 2., 3., 1., 2., 3., 1.], dtype=float32)
    >>> standardise(x, 7, "repeat", fade_out=3)
    array([1. , 2. , 3. , 1. , 2. , 1.5, 0. ], dtype=float32)
    >>> standardise(x, 6, "zero")
    array([0., 1., 2., 3., 0., 0.], dtype=float32)
    >>> standardise(x, 2, "zero")
    array([1., 2.], dtype=float32)
    """
    if pad not in PADS:
        raise ValueError(f"pad must be one of {PADS}, not {pad!r}")
    if len(cycle) == 0:
        raise ValueError("cannot standardise an empty cycle")
    cycle = np.asarray(cycle, dtype=np.float32)
    if len(cycle) > length:
        return cycle[:length].copy()
    if pad == "zero":
        out = np.zeros(length, dtype=np.float32)
        first = (length - len(cycle)) // 2
        out[first : first + len(cycle)] = cycle
        return out
    tiled = np.tile(cycle, -(-length // len(cycle)))[:length]
    return fade(tiled, 0, fade_out)


def write_cycle(path, signal, sample_rate):
    """Write a float32 WAV (subtype ``FLOAT``) atomically.

    The file is encoded in memory, written to a temporary file of a name
    unique to this process beside ``path`` and renamed, so a crash never
    leaves half a cycle under its final name, two processes writing the
    same cycle never mix their bytes, and a full disk raises ``OSError``
    (``errno.ENOSPC``) rather than a libsndfile error. The temporary file
    is removed if the write fails.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> path = str(getfixture("tmp_path")) + "/c.wav"
    >>> write_cycle(path, np.full(3, 0.25, dtype=np.float32), 16000)
    >>> sf.info(path).subtype, sf.read(path, dtype="float32")[0].tolist()
    ('FLOAT', [0.25, 0.25, 0.25])
    """
    path = Path(path)
    encoded = io.BytesIO()
    sf.write(encoded, signal, int(sample_rate), subtype="FLOAT", format="WAV")
    tmp = path.with_name(
        f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    )
    try:
        with open(tmp, "xb") as file:
            file.write(encoded.getbuffer())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class CutResult:
    """What cutting one recording gave.

    ``rows`` holds the manifest fields of each kept cycle, ``skips`` the
    :class:`~speechbrain_rsc.data.icbhi.Skip` of each cycle (or of the whole
    recording) left out, ``clamped`` a ``{"file", "line", "end",
    "audio_end"}`` record of each cycle whose end was clamped to the audio.
    """

    rows: list = field(default_factory=list)
    skips: list = field(default_factory=list)
    clamped: list = field(default_factory=list)


def cut_all(
    jobs, cache, sample_rate, length, pad, overrun="skip", parallel=True
):
    """Run :func:`cut_recording` on every job, in parallel when it pays.

    A pool of up to ``MAX_WORKERS`` forked processes (never more than the
    CPUs) is used for ``POOL_MIN_RECORDINGS`` recordings or more when
    ``parallel`` (the caller passes ``False`` when every cycle is cached
    already); results keep the order of ``jobs``. On Linux the workers die
    with this process (:func:`_init_worker`). The skips of the results are
    logged here.

    Returns
    -------
    list of CutResult
    """
    work = functools.partial(
        cut_recording,
        cache=cache,
        sample_rate=sample_rate,
        length=length,
        pad=pad,
        overrun=overrun,
    )
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    serial = workers < 2 or len(jobs) < POOL_MIN_RECORDINGS
    if serial or not parallel:
        results = [work(job) for job in jobs]
    else:
        results = _in_pool(work, jobs, workers)
    for result in results:
        for skip in result.skips:
            logger.warning("Skipped %s", skip)
    return results


def _in_pool(work, jobs, workers):
    """``[work(job) for job in jobs]`` in a pool of ``workers`` processes."""
    methods = multiprocessing.get_all_start_methods()
    # fork, as DataLoader workers: no re-import of torch in every worker.
    context = multiprocessing.get_context(
        "fork" if "fork" in methods else "spawn"
    )
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(os.getpid(),),
    ) as pool:
        try:
            return list(pool.map(work, jobs, chunksize=8))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _init_worker(parent_pid):
    """Set up a pool worker: one torch thread, and death with the parent.

    On Linux the worker asks for SIGKILL when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so that killing the preparation does not
    leave workers running under PID 1, and exits at once if the parent died
    before that request. The signal comes when the forking thread ends,
    which is the one blocked in :func:`_in_pool` for the pool's life.

    Arguments
    ---------
    parent_pid : int
        The pid of the process that made the pool.
    """
    torch.set_num_threads(1)
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning(
            "prctl(PR_SET_PDEATHSIG) failed (%s): worker %d would outlive "
            "a killed preparation",
            os.strerror(ctypes.get_errno()),
            os.getpid(),
        )
    if os.getppid() != parent_pid:
        os._exit(1)


def cut_recording(job, cache, sample_rate, length, pad, overrun="skip"):
    """Cut, standardise and cache every valid cycle of one recording.

    The recording is decoded, resampled and faded only if one of its
    cycles is not cached yet. Nothing is logged here (this may run in a
    worker process): :func:`cut_all` logs the returned skips.

    Arguments
    ---------
    job : Job
        The recording (:class:`~speechbrain_rsc.data.icbhi.Job`).
    cache : Path
        The cycle cache folder.
    sample_rate : int
        Target rate.
    length : int
        Samples per standardised cycle.
    pad : str
        ``"repeat"`` or ``"zero"``.
    overrun : str
        ``"clamp"`` or ``"skip"`` (see the module docstring).

    Returns
    -------
    CutResult
    """
    if overrun not in OVERRUNS:
        raise ValueError(f"overrun must be one of {OVERRUNS}, not {overrun!r}")
    result = CutResult()
    try:
        info = inspect_recording(job.wav)
        cycles, line_skips = read_annotations(job.txt)
        if not cycles and not line_skips:
            raise ICBHIFormatError(f"{job.txt}: no cycle annotated")
    except (RecordingError, ICBHIFormatError) as error:
        result.skips.append(
            Skip("unusable recording", str(job.wav), None, str(error))
        )
        return result
    result.skips.extend(line_skips)
    audio_seconds = info.frames / info.samplerate
    kept = []
    for cycle in cycles:
        skip, clamped = _check_bounds(
            cycle, audio_seconds, sample_rate, job.txt, overrun
        )
        if skip is not None:
            result.skips.append(skip)
            continue
        if clamped:
            result.clamped.append(
                {
                    "file": str(job.txt),
                    "line": cycle.line,
                    "end": cycle.end,
                    "audio_end": audio_seconds,
                }
            )
        kept.append(cycle)
    paths = [cache / f"{job.stem.name}_{c.index}.wav" for c in kept]
    todo = [(c, p) for c, p in zip(kept, paths) if not p.is_file()]
    try:
        _write_cycles(job.wav, todo, sample_rate, length, pad)
    except RecordingError as error:
        result.skips.append(
            Skip("unusable recording", str(job.wav), None, str(error))
        )
        return result
    for cycle, path in zip(kept, paths):
        result.rows.append(
            {
                "ID": path.stem,
                "duration": length / sample_rate,
                "wav": str(path),
                "label": cycle.label,
                "crackle": cycle.crackle,
                "wheeze": cycle.wheeze,
                "start": cycle.start,
                "end": cycle.end,
                "source_sample_rate": info.samplerate,
            }
        )
    return result


def _check_bounds(cycle, audio_seconds, sample_rate, txt, overrun):
    """Return ``(skip, clamped)`` for a cycle against the audio length."""
    where = (str(txt), cycle.line)
    if overrun == "skip" and cycle.end > audio_seconds + END_TOLERANCE:
        detail = (
            f"end {cycle.end} s, audio {audio_seconds:.4f} s "
            "(overrun: skip; clamp keeps it)"
        )
        return Skip("end beyond the audio", *where, detail), False
    if cycle.start >= audio_seconds:  # nothing to cut, even clamped
        detail = f"start {cycle.start} s, audio {audio_seconds:.4f} s"
        return Skip("start beyond the audio", *where, detail), False
    end = min(cycle.end, audio_seconds)
    if int(end * sample_rate) <= int(cycle.start * sample_rate):
        detail = f"shorter than one sample at {sample_rate} Hz"
        return Skip("zero-length cycle", *where, detail), False
    return None, cycle.end > audio_seconds


def _write_cycles(wav, todo, sample_rate, length, pad):
    """Decode, resample and fade ``wav`` once; write each (cycle, path)."""
    if not todo:
        return
    try:
        signal, rate = read_recording(wav)
    except RecordingError:
        raise
    except Exception as error:  # a decoder error past the header checks
        raise RecordingError(f"{wav}: cannot decode ({error})") from error
    signal = resample(signal, rate, sample_rate)
    signal = fade(signal, fade_length(sample_rate))
    for cycle, path in todo:
        segment = cut(signal, cycle.start, cycle.end, sample_rate)
        if len(segment) == 0:  # _check_bounds rules this out
            raise RecordingError(f"{wav}: empty cut for line {cycle.line}")
        out = standardise(segment, length, pad, fade_length(sample_rate))
        write_cycle(path, out, sample_rate)
