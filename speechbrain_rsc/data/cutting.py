"""Cutting every cycle once into the cycle cache, in a pool when it pays.

A cycle cache ``cycles_<key>/`` holds one float32 WAV per cycle,
``<recording>_<index>.wav``, of exactly ``duration * sample_rate`` samples,
cut as the de facto pipeline does (:mod:`speechbrain_rsc.data.cycles`).
Cycles are written to temporary files and renamed, and the cache counts as
complete only once ``cache_options.json`` is written after its last cycle
(:func:`mark_cache_complete`). The pool workers that cut the cycles die
with the preparing process on Linux, even if it is killed with SIGKILL.

What happens to a cycle whose end is beyond the audio is the
``overrun`` option (:data:`OVERRUNS`): ``"clamp"`` cuts it to the audio's
end, as the reference code does for every cycle; ``"skip"`` skips it if it
overruns by more than ``END_TOLERANCE`` seconds and clamps it otherwise.
Every clamped cycle is listed in the result's ``clamped``.

Example
-------
>>> cache_is_complete(getfixture("tmp_path"))
False
"""

import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import torch

from speechbrain_rsc.data.cycles import (
    RecordingError,
    cut,
    fade,
    fade_length,
    inspect_recording,
    read_recording,
    resample,
    standardise,
    write_cycle,
)
from speechbrain_rsc.data.icbhi import ICBHIFormatError, Skip, read_annotations
from speechbrain_rsc.data.publishing import write_json

logger = logging.getLogger(__name__)

END_TOLERANCE = 0.05  # seconds an annotation may overrun the audio
OVERRUNS = ("clamp", "skip")
CACHE_PREFIX = "cycles_"
CACHE_DONE_FILE = "cache_options.json"
MAX_WORKERS = 2  # about 1.5-2x faster than serial on 2 CPUs
POOL_MIN_RECORDINGS = 100  # below this a pool costs more than it saves
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def cache_is_complete(cache):
    """Whether every cycle of ``cache`` was written (its marker exists)."""
    return (cache / CACHE_DONE_FILE).is_file()


def mark_cache_complete(cache, options):
    """Mark ``cache`` complete by writing its ``options`` beside the cycles."""
    write_json(cache / CACHE_DONE_FILE, options)


def cut_all(jobs, cache, sample_rate, length, pad, overrun="skip"):
    """Run :func:`cut_recording` on every job, in parallel when it pays.

    A pool of up to ``MAX_WORKERS`` forked processes (never more than the
    CPUs) is used for ``POOL_MIN_RECORDINGS`` recordings or more when the
    cache is not complete yet; results keep the order of ``jobs``. On
    Linux the workers die with this process (:func:`_init_worker`). The
    skips of the results are logged here.

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
    if serial or cache_is_complete(cache):
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
        The recording (:class:`~speechbrain_rsc.data.planning.Job`).
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
