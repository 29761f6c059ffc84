"""Classify respiratory sound files with a trained student or ensemble.

:class:`RespiratoryClassifier` is a SpeechBrain ``Pretrained`` interface.
It loads a trained-model folder (``<run>/model``, written by the recipes)
or a folder of runs (``results/cnn6``: every ``<seed>/model`` becomes an
ensemble member), reads a wav of any sample rate and length, prepares it
as the data preparation prepares a cycle (resample, fade, cut or pad to the
model's duration), and returns the class, the four probabilities and, for
an ensemble, each member's vote. The model is prepared for inference
(:func:`~speechbrain_rsc.models.folding.for_inference`; an ensemble of one
architecture is a :class:`~speechbrain_rsc.fused.FusedEnsemble`), which
changes its outputs only by float rounding.

For BTS the prompt comes from the recording's metadata: given explicitly,
or read from an ICBHI-style file name (location and device; age and sex
only when given).

Command line::

    rsc-classify recording.wav --model results/cnn6-d/cnn6_mean_k5/1/model

Example
-------
>>> metadata_from_filename("/x/104_1b1_Al_sc_Litt3200.wav")["device"]
'Litt3200'
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from speechbrain.inference.interfaces import Pretrained

from speechbrain_rsc.data.cycles import (
    fade,
    fade_length,
    read_recording,
    resample,
    standardise,
)
from speechbrain_rsc.data.prompts import bts_prompt
from speechbrain_rsc.data.schema import CLASS_NAMES, age_group, parse_stem
from speechbrain_rsc.export import CONFIG_FILE, load_trained, read_config
from speechbrain_rsc.fused import make_ensemble
from speechbrain_rsc.models.folding import for_inference


def metadata_from_filename(path):
    """Location and device codes from an ICBHI-style file name, if it is one.

    Returns
    -------
    dict
        ``location`` and ``device``, or empty when the name is not a stem.
    """
    try:
        stem = parse_stem(Path(path).stem)
    except ValueError:
        return {}
    return {"location": stem.location, "device": stem.device}


def model_folders(folder):
    """The trained-model folders under ``folder``: itself, or its runs."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return [folder]
    runs = sorted(p.parent for p in folder.glob(f"*/model/{CONFIG_FILE}"))
    if not runs:
        raise FileNotFoundError(
            f"{folder} holds no trained model ({CONFIG_FILE}) nor runs "
            f"with <run>/model/{CONFIG_FILE}"
        )
    return runs


class RespiratoryClassifier(Pretrained):
    """A trained student (or ensemble) as a SpeechBrain inference interface.

    Build it with :meth:`from_folder`.
    """

    MODULES_NEEDED = ["model"]

    @classmethod
    def from_folder(cls, folder, device=None):
        """Load a trained-model folder or a folder of runs (an ensemble).

        Arguments
        ---------
        folder : str or Path
            ``<run>/model`` or a folder of ``<run>/model`` folders.
        device : str, optional
            Defaults to CUDA when available, else CPU.
        """
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        folders = model_folders(folder)
        configs = [read_config(f) for f in folders]
        if len(folders) == 1:
            model = for_inference(load_trained(folders[0])[0])
        else:
            model = make_ensemble([load_trained(f)[0] for f in folders])
        info = configs[0]["info"]
        hparams = {
            "sample_rate": configs[0]["sample_rate"],
            "duration": info.get("duration", 8.0),
            "pad": info.get("pad", "repeat"),
            "members": [str(f) for f in folders],
        }
        return cls(
            modules={"model": model},
            hparams=hparams,
            run_opts={"device": device},
        )

    def load_cycle(self, path):
        """A wav file as one model-ready cycle ``[1, samples]``."""
        signal, rate = read_recording(path)
        sample_rate = self.hparams.sample_rate
        signal = resample(signal, rate, sample_rate)
        signal = fade(signal, fade_length(sample_rate))
        length = int(round(self.hparams.duration * sample_rate))
        cycle = standardise(
            signal, length, self.hparams.pad, fade_length(sample_rate)
        )
        return torch.from_numpy(cycle).unsqueeze(0)

    def prompt(self, path, metadata=None):
        """The BTS prompt of a file from its metadata or ICBHI name."""
        meta = {**metadata_from_filename(path), **(metadata or {})}
        age = meta.get("age")
        return bts_prompt(
            meta.get("location", "Tc"),
            age_group(float(age)) if age not in (None, "") else "",
            meta.get("sex", ""),
            meta.get("device", "Meditron"),
        )

    @torch.no_grad()
    def classify_file(self, path, metadata=None):
        """Classify one wav file.

        Arguments
        ---------
        path : str
            A mono PCM wav of any rate and length.
        metadata : dict, optional
            ``location``, ``device`` codes, ``age``, ``sex`` for BTS.

        Returns
        -------
        dict
            ``class``, ``probabilities`` (name -> p, summing to 1), and for
            an ensemble ``members`` (each member's predicted class).
        """
        wavs = self.load_cycle(path).to(self.device)
        lens = torch.ones(1, device=self.device)
        prompts = [self.prompt(path, metadata)]
        model = self.mods.model
        if hasattr(model, "member_logits"):
            member_logits = model.member_logits(wavs, lens, prompts)
            logits = member_logits.mean(0)
            votes = member_logits.argmax(-1)[:, 0].tolist()
        else:
            logits, votes = model(wavs, lens, prompts), None
        probs = torch.softmax(logits.float(), dim=-1)[0].cpu()
        result = {
            "file": str(path),
            "class": CLASS_NAMES[int(probs.argmax())],
            "probabilities": {
                name: float(p) for name, p in zip(CLASS_NAMES, probs)
            },
        }
        if votes is not None:
            result["members"] = [CLASS_NAMES[v] for v in votes]
        return result


def parse_age(value):
    """Check an ``--age``: a non-negative number of years, kept as given.

    Example
    -------
    >>> parse_age("63")
    '63'
    >>> parse_age("-1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: '-1' is not an age: give the patient's age \
in years as a non-negative number, e.g. 63 or 0.5
    """
    try:
        age = float(value)
    except ValueError:
        age = math.nan
    if not (math.isfinite(age) and age >= 0):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an age: give the patient's age in years as a "
            "non-negative number, e.g. 63 or 0.5"
        )
    return value


def parse_device(value):
    """Check a ``--device``: a torch device this machine has, kept as given.

    Example
    -------
    >>> parse_device("cpu")
    'cpu'
    >>> parse_device("gpu7")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: 'gpu7' is not a torch device: use cpu, \
cuda or cuda:N (or leave --device out to pick one)
    """
    accepted = "use cpu, cuda or cuda:N (or leave --device out to pick one)"
    try:
        device = torch.device(value)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a torch device: {accepted}"
        ) from None
    if device.type == "cpu":
        return value
    backend = getattr(torch, device.type, None)
    if not getattr(backend, "is_available", lambda: False)():
        raise argparse.ArgumentTypeError(
            f"{value!r}: this machine has no {device.type} device; use cpu "
            "(or leave --device out to pick one)"
        )
    count = getattr(backend, "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(
            f"{value!r}: this machine has {count} {device.type} device(s), "
            f"numbered from 0 to {count - 1}; {accepted}"
        )
    return value


def check_audio_files(parser, files):
    """Refuse, through ``parser.error``, a file that is missing or a folder."""
    for name in files:
        path = Path(name)
        if path.is_dir():
            parser.error(
                f"{name} is a folder, not an audio file: give wav files, "
                f"e.g. {path / '*.wav'}"
            )
        if not path.is_file():
            parser.error(
                f"audio file {name} does not exist: give the path of a wav file"
            )


def main(argv=None):
    """``rsc-classify FILE.wav [FILE.wav ...] --model DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="wav files to classify")
    parser.add_argument("--model", required=True, help="model or runs folder")
    parser.add_argument("--location", help="chest location code, e.g. Al")
    parser.add_argument("--device_code", help="device code, e.g. Meditron")
    parser.add_argument(
        "--age", type=parse_age, help="patient age in years (>= 0)"
    )
    parser.add_argument("--sex", choices=["M", "F"], help="patient sex")
    parser.add_argument(
        "--device",
        type=parse_device,
        help="torch device: cpu, cuda or cuda:N (default: auto)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    check_audio_files(parser, args.files)
    metadata = {
        key: value
        for key, value in {
            "location": args.location,
            "device": args.device_code,
            "age": args.age,
            "sex": args.sex,
        }.items()
        if value
    }
    classifier = RespiratoryClassifier.from_folder(args.model, args.device)
    results = [classifier.classify_file(f, metadata) for f in args.files]
    for result in results:
        print(json.dumps(result))
    return results


if __name__ == "__main__":
    main()
