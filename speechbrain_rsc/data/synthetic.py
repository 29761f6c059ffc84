"""A synthetic ICBHI 2017 database in the official layout.

The real database cannot be downloaded on every machine, so the recipe and
the tests default to this stand-in. It copies the layout and the text
formats of the official files exactly (see ``shared/icbhi_sample``) and has
sounds a model can learn but not perfectly:

- breath: band-limited noise (about 100-1000 Hz) with an inhale/exhale
  envelope per cycle;
- crackles: several damped sinusoids of a few ms at random times;
- wheezes: a gliding tone of 100-1000 Hz with vibrato and harmonics over
  part of the cycle;
- a filter and gain per device, background noise (about 50-4000 Hz) at
  a random SNR;
- faint events (weak crackles, short wheezes) and 3 % of the cycles
  annotated with a class that is not the one heard.

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = make_synthetic_icbhi(tmp, recordings=2, seed=1)
...     for name in sorted(p.name for p in root.iterdir()):
...         print(name)
ICBHI_Challenge_demographic_information.txt
ICBHI_Challenge_diagnosis.txt
ICBHI_challenge_train_test.txt
ICBHI_final_database
"""

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from speechbrain_rsc.data.schema import DEVICES, LOCATIONS, Stem, parse_stem

logger = logging.getLogger(__name__)

FULL_SCALE = 920  # recordings in the real database, from 126 patients
N_PATIENTS = 126
CLASS_PRIOR = (0.53, 0.27, 0.13, 0.07)  # normal, crackle, wheeze, both
LABEL_NOISE = 0.03
# Loudness ranges (log-uniform, relative to the breath noise) of crackles and
# wheezes, and of the background noise's SNR: they set how hard the task is.
CRACKLE_GAIN = (3.0, 16.0)
WHEEZE_GAIN = (1.0, 3.0)
SNR_DB = (20.0, 40.0)
# Share of patients per device (each patient keeps one device).
DEVICE_WEIGHTS = {
    "AKGC417L": 0.55,
    "Meditron": 0.2,
    "LittC2SE": 0.15,
    "Litt3200": 0.1,
}
# A patient's recordings cycle through these rates.
SAMPLE_RATES = {
    "AKGC417L": (44100,),
    "LittC2SE": (44100,),
    "Meditron": (10000, 44100),
    "Litt3200": (4000,),
}
# (gain, a): y[n] = x[n] + a * x[n - 1] (a < 0 brightens), then the gain
# scales the recording's peak level.
DEVICE_COLOUR = {
    "AKGC417L": (0.7, -0.3),
    "LittC2SE": (1.0, 0.5),
    "Meditron": (0.8, -0.7),
    "Litt3200": (1.3, 0.9),
}
# Patients per diagnosis in the real database.
DIAGNOSES = {
    "COPD": 64,
    "Healthy": 26,
    "URTI": 14,
    "Bronchiectasis": 7,
    "Bronchiolitis": 6,
    "Pneumonia": 6,
    "LRTI": 2,
    "Asthma": 1,
}


@dataclass
class Recording:
    """The plan of one synthetic recording; times in milliseconds."""

    stem: Stem
    sample_rate: int
    subtype: str
    length_ms: int
    bounds_ms: np.ndarray  # (n_cycles, 2) start and end of each cycle
    classes: np.ndarray  # the class each cycle sounds like
    annotated: np.ndarray  # the class written in the annotation
    split: str = "train"


def _fmt(value, decimals):
    """Write a number like the real files: no trailing zeros."""
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plan_patients(rng, n_patients):
    """Draw patient ids, demographics lines and diagnoses lines."""
    ids = np.sort(rng.choice(np.arange(101, 227), n_patients, replace=False))
    na_patient = 223 if 223 in ids else int(rng.choice(ids))
    demo, diag = [], []
    names, counts = list(DIAGNOSES), np.array(list(DIAGNOSES.values()))
    for pid in ids:
        diag.append(f"{pid}\t{rng.choice(names, p=counts / counts.sum())}")
        if pid == na_patient:
            demo.append(f"{pid}\tNA\tNA\tNA\tNA\tNA")
            continue
        sex = rng.choice(["M", "F"])
        if rng.random() < 0.3:  # a child: weight and height, no BMI
            age = rng.uniform(0.25, 18.9)
            height = 60 + 6 * age + rng.normal(0, 5)
            weight = rng.uniform(13, 20) * (height / 100) ** 2
            cols = [_fmt(age, 2 if age < 1 else 0), sex, "NA"]
            cols += [_fmt(weight, 1), _fmt(height, 0)]
        else:
            bmi = _fmt(rng.uniform(17, 40), 2) if rng.random() > 0.1 else "NA"
            cols = [str(rng.integers(19, 91)), sex, bmi, "NA", "NA"]
        demo.append("\t".join([str(pid), *cols]))
    return ids, demo, diag


def _plan_cycles(rng, prior):
    """Draw cycle bounds, heard and annotated classes, length (in ms)."""
    n = rng.integers(4, 12)
    dur = np.round(1000 * (1 + 4 * rng.beta(2, 3, n))).astype(np.int64)
    ends = rng.integers(0, 500) + np.cumsum(dur)
    bounds = np.stack([ends - dur, ends], axis=1)
    classes = rng.choice(4, n, p=prior)
    annotated = classes.copy()
    flip = rng.random(n) < LABEL_NOISE
    annotated[flip] = (classes[flip] + rng.integers(1, 4, flip.sum())) % 4
    return bounds, classes, annotated, int(ends[-1] + rng.integers(0, 500))


def _split(recs, rng):
    """Send whole patients to test until about 40 % of recordings are."""
    patients = sorted({r.stem.patient for r in recs})
    count = {p: sum(r.stem.patient == p for r in recs) for p in patients}
    test, n_test = set(), 0
    for pid in rng.permutation(patients):
        if not test or n_test + count[pid] <= 0.4 * len(recs):
            test.add(pid)
            n_test += count[pid]
    for rec in recs:
        rec.split = "test" if rec.stem.patient in test else "train"


def _plan(recordings, seed):
    """Plan the whole database: patients, recordings, cycles and split.

    Example
    -------
    >>> recs, demo, diag = _plan(920, seed=0)
    >>> len(recs), len(demo), len({r.stem.patient for r in recs})
    (920, 126, 126)
    """
    if recordings < 2:
        raise ValueError(f"need at least 2 recordings, got {recordings}")
    if seed < 0:
        raise ValueError(f"the seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, 0])
    # at least 4 patients (so all 4 devices) once there are 4 recordings
    n_patients = max(min(4, recordings), round(recordings * 126 / 920))
    n_patients = min(N_PATIENTS, n_patients)
    ids, demo, diag = _plan_patients(rng, n_patients)
    weights = np.minimum(rng.lognormal(0, 1.2, n_patients), 15)
    per_patient = 1 + rng.multinomial(
        recordings - n_patients, weights / weights.sum()
    )
    device_names = list(DEVICE_WEIGHTS)
    devices = rng.choice(
        device_names, n_patients, p=list(DEVICE_WEIGHTS.values())
    )
    for k, patient in enumerate(rng.permutation(n_patients)[: len(DEVICES)]):
        devices[patient] = device_names[k]  # every device appears
    recs, locations = [], list(LOCATIONS)
    for pid, count, device in zip(ids, per_patient, devices):
        prior = rng.dirichlet(40 * np.array(CLASS_PRIOR))
        offset = rng.integers(len(locations))
        for j in range(count):
            # j // 7 numbers the session, so (index, location) never repeat
            index = f"{j // 7 + 1}{rng.choice(['b', 'p'])}{rng.integers(1, 6)}"
            mode = "mc" if device == "AKGC417L" or rng.random() < 0.2 else "sc"
            location = locations[(offset + j) % len(locations)]
            rates = SAMPLE_RATES[device]
            wide = device != "Litt3200" and len(recs) % 2 == 1
            bounds, classes, annotated, length = _plan_cycles(rng, prior)
            recs.append(
                Recording(
                    stem=parse_stem(
                        f"{pid}_{index}_{location}_{mode}_{device}"
                    ),
                    sample_rate=rates[j % len(rates)],
                    subtype="PCM_24" if wide else "PCM_16",
                    length_ms=length,
                    bounds_ms=bounds,
                    classes=classes,
                    annotated=annotated,
                )
            )
    _split(recs, rng)
    return recs, demo, diag


def _band_noise(rng, n, sr, low, high):
    """Unit-variance noise band-passed to about ``low``-``high`` Hz.

    The band pass is the difference of two moving averages ending at the
    same sample (a box of length L has its -3 dB point near 0.443 sr / L),
    both read from one cumulative sum. For white noise of variance v their
    difference has variance v (1 / short - 1 / long).
    """
    short = max(1, round(0.443 * sr / high))
    long = max(short + 1, round(0.443 * sr / low))
    white = rng.random(n + long, dtype=np.float32)
    white -= 0.5
    # float32 is enough: box sums only see the last few rounding errors;
    # the in-place steps spare the page faults of fresh large arrays
    csum = np.empty(n + long + 1, dtype=np.float32)
    csum[0] = 0
    np.cumsum(white, out=csum[1:])
    end = csum[long + 1 :]
    band = np.subtract(end, csum[long + 1 - short :][:n])
    band *= np.float32(1 / short)
    tail = np.subtract(end, csum[1 : n + 1], out=white[:n])
    tail *= np.float32(1 / long)
    band -= tail
    band *= np.float32(1 / np.sqrt((1 / short - 1 / long) / 12))
    return band


def _envelope(rng, rec):
    """Inhale then weaker exhale hump per cycle over a small floor.

    Computed per millisecond, then held over each millisecond's samples.
    """
    env = np.full(rec.length_ms, 0.15, dtype=np.float32)
    for start, end in rec.bounds_ms:
        phase = np.arange(end - start, dtype=np.float32) / (end - start)
        inhale = rng.uniform(0.35, 0.5)
        exhale = rng.uniform(0.4, 0.8) * np.sin(
            np.pi * (phase - inhale) / (1 - inhale)
        )
        env[start:end] += np.where(
            phase < inhale, np.sin(np.pi * phase / inhale), exhale
        )
    edges = np.arange(rec.length_ms + 1) * rec.sample_rate // 1000
    return np.repeat(env, np.diff(edges))


def _add_crackles(rng, signal, sr, cycles):
    """Add 2-9 damped sinusoids of a few ms to each given cycle."""
    length = int(0.012 * sr)
    onsets, gains = [], []
    for start, end in cycles:
        k = rng.integers(2, 10)
        onsets.append(rng.integers(start, end - length, k))
        # one loudness per cycle, some very faint, then jitter per crackle
        gain = np.exp(
            rng.uniform(np.log(CRACKLE_GAIN[0]), np.log(CRACKLE_GAIN[1]))
        )
        gains.append(gain * rng.uniform(0.5, 1.5, k))
    if not onsets:
        return
    onsets, gains = np.concatenate(onsets), np.concatenate(gains)
    freq = rng.uniform(250, min(2500, 0.4 * sr), (len(onsets), 1))
    tau = rng.uniform(0.0005, 0.0025, (len(onsets), 1))
    t = np.arange(length) / sr
    waves = gains[:, None] * np.exp(-t / tau) * np.sin(2 * np.pi * freq * t)
    np.add.at(signal, onsets[:, None] + np.arange(length), waves)


def _add_wheeze(rng, signal, sr, start, end):
    """Add a gliding tone with vibrato and two harmonics to part of a cycle."""
    dur = int(rng.uniform(0.15, 0.9) * (end - start))
    first = rng.integers(start, end - dur + 1)
    t = np.arange(dur, dtype=np.float32) / np.float32(sr)
    f0 = np.exp(rng.uniform(np.log(100), np.log(1000)))
    vibrato = rng.uniform(0.005, 0.03) * np.sin(
        2 * np.pi * rng.uniform(3, 8) * t
    )
    freq = f0 * (1 + rng.uniform(-0.2, 0.2) * t / t[-1] + vibrato)
    # float64 sum, then wrapped so float32 keeps the phase exact enough
    phase = np.mod(
        np.cumsum(freq, dtype=np.float64) * (2 * np.pi / sr), 2 * np.pi
    )
    phase = phase.astype(np.float32)
    tone = sum(
        amp * np.sin(h * phase)
        for h, amp in ((1, 1.0), (2, 0.35), (3, 0.12))
        if h * freq.max() < sr / 2
    )
    ramp = np.minimum(1, np.minimum(t, t[-1] - t) / 0.02)
    gain = np.exp(rng.uniform(np.log(WHEEZE_GAIN[0]), np.log(WHEEZE_GAIN[1])))
    signal[first : first + dur] += gain * ramp * tone


def _render(rec, rng):
    """Synthesise one recording as float32 samples in [-1, 1]."""
    sr = rec.sample_rate
    n = rec.length_ms * sr // 1000
    bounds = rec.bounds_ms * sr // 1000
    signal = _band_noise(rng, n, sr, 100, 1000)
    signal *= _envelope(rng, rec)
    _add_crackles(rng, signal, sr, bounds[rec.classes % 2 == 1])
    for start, end in bounds[rec.classes >= 2]:
        _add_wheeze(rng, signal, sr, start, end)
    gain, tilt = DEVICE_COLOUR[rec.stem.device]
    signal[1:] += tilt * signal[:-1]
    snr_db = rng.uniform(*SNR_DB)  # against breath at its loudest
    noise = _band_noise(rng, n, sr, 50, 4000)
    noise *= np.float32(0.8 / 10 ** (snr_db / 20))
    signal += noise
    peak = gain * rng.uniform(0.25, 0.7)  # the device gain sets the level
    signal *= np.float32(peak / (np.abs(signal).max() + 1e-12))
    return signal


def _write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_lines(path, lines, newline="\n", final_newline=True):
    """Write text lines with exactly the given line ends."""
    text = newline.join(lines) + (newline if final_newline else "")
    _write_bytes(path, text.encode("ascii"))


def make_synthetic_icbhi(out_dir, recordings=60, seed=0):
    """Write a synthetic ICBHI 2017 database in the official layout.

    Arguments
    ---------
    out_dir : str or Path
        Folder to write (created if missing); files of the same names are
        replaced.
    recordings : int
        Number of recordings; ``FULL_SCALE`` (920) gives 126 patients and
        about 6900 cycles like the real database.
    seed : int
        The same seed writes byte-identical files.

    Returns
    -------
    Path
        ``out_dir``, holding ``ICBHI_final_database/`` (one ``.wav`` and one
        ``.txt`` per recording), ``ICBHI_challenge_train_test.txt``,
        ``ICBHI_Challenge_demographic_information.txt`` and
        ``ICBHI_Challenge_diagnosis.txt``.

    Raises
    ------
    FileExistsError
        If ``out_dir/ICBHI_final_database`` holds recordings that this
        seed and size would not write (a stale database would be mixed in).
    ValueError
        If ``recordings`` < 2 or ``seed`` < 0.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_synthetic_icbhi(tmp, recordings=3)
    ...     len(list((root / "ICBHI_final_database").glob("*.wav")))
    3
    """
    root = Path(out_dir)
    audio_dir = root / "ICBHI_final_database"
    recs, demo, diag = _plan(int(recordings), int(seed))
    stems = {rec.stem.name for rec in recs}
    if audio_dir.is_dir():
        stale = sorted(
            p.name
            for p in audio_dir.iterdir()
            if p.suffix in (".wav", ".txt") and p.stem not in stems
        )
        if stale:
            raise FileExistsError(
                f"{audio_dir} holds {len(stale)} recording files this seed "
                f"and size would not write (e.g. {stale[0]}); "
                "use an empty folder"
            )
    audio_dir.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(recs):
        rng = np.random.default_rng([int(seed), 1, i])
        tmp = audio_dir / f"{rec.stem.name}.wav.tmp"
        sf.write(
            tmp, _render(rec, rng), rec.sample_rate, rec.subtype, format="WAV"
        )
        os.replace(tmp, audio_dir / f"{rec.stem.name}.wav")
        lines = [
            f"{_fmt(s / 1000, 3)}\t{_fmt(e / 1000, 3)}\t{c % 2}\t{c // 2}"
            for (s, e), c in zip(rec.bounds_ms, rec.annotated)
        ]
        _write_lines(audio_dir / f"{rec.stem.name}.txt", lines)
    split = sorted(f"{r.stem.name}\t{r.split}" for r in recs)
    _write_lines(root / "ICBHI_challenge_train_test.txt", split, "\r\n")
    _write_lines(root / "ICBHI_Challenge_demographic_information.txt", demo)
    _write_lines(
        root / "ICBHI_Challenge_diagnosis.txt",
        diag,
        "\r\n",
        final_newline=False,
    )
    n_cycles = sum(len(r.classes) for r in recs)
    logger.info(
        "wrote %d recordings, %d cycles to %s", len(recs), n_cycles, root
    )
    return root


def main(argv=None):
    """Command line: ``rsc-synthetic OUT_DIR [--recordings N] [--seed S]``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     main([tmp, "--recordings", "2"])  # doctest: +ELLIPSIS
    synthetic ICBHI: 2 recordings, ... cycles in ...
    """
    parser = argparse.ArgumentParser(
        prog="rsc-synthetic",
        description="Write a synthetic ICBHI 2017 database (official layout).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write")
    parser.add_argument(
        "--recordings", type=int, default=60, help="default: 60"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--full-scale",
        action="store_true",
        help=f"{FULL_SCALE} recordings of 126 patients, like the real data",
    )
    args = parser.parse_args(argv)
    recordings = FULL_SCALE if args.full_scale else args.recordings
    begin = time.perf_counter()
    root = make_synthetic_icbhi(args.out_dir, recordings, args.seed)
    seconds = time.perf_counter() - begin
    cycles = sum(
        len(p.read_text().splitlines())
        for p in (root / "ICBHI_final_database").glob("*.txt")
    )
    print(
        f"synthetic ICBHI: {recordings} recordings, {cycles} cycles "
        f"in {root} ({seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
