"""Classify respiratory sound files with a trained student or ensemble.

:class:`RespiratoryClassifier` is a SpeechBrain ``Pretrained`` interface.
It loads:

- with :meth:`~RespiratoryClassifier.from_hparams` (SpeechBrain's way), a
  published folder or Hugging Face model ID holding ``hyperparams.yaml``
  (written by :func:`~speechbrain_rsc.export.save_trained` for a model and
  :func:`~speechbrain_rsc.export.export_ensemble` for an ensemble);
- with :meth:`~RespiratoryClassifier.from_folder`, a trained-model folder
  (``<run>/model``, written by the recipes) or a folder of runs
  (``results/cnn6``: every ``<seed>/model`` becomes an ensemble member).

It reads any audio file soundfile reads (WAV of any PCM width or float,
FLAC, OGG, ...; several channels are averaged), prepares it as the data
preparation prepares a cycle (resample, fade, cut or pad to the model's
duration), and returns the class, the four probabilities, warnings and,
for an ensemble, each member's vote. The model is prepared for inference
(:func:`~speechbrain_rsc.models.folding.for_inference`; an ensemble of one
architecture is a :class:`~speechbrain_rsc.fused.FusedEnsemble`), which
changes its outputs only by float rounding.

For BTS the prompt comes from the recording's metadata: given explicitly,
or read from an ICBHI-style file name (location and device; age and sex
only when given). Missing metadata are named in each result
(``missing_metadata`` and a warning): location and device then default to
``Tc`` and ``Meditron``, age and sex are left out of the sentence.

Command line (exit status 0 when every file was classified, 1 when any
file could not be read, 2 for bad arguments or a model that cannot be
loaded)::

    rsc-classify a.wav b.flac --model results/cnn6-d/cnn6_mean_k5/1/model
    rsc-classify a.wav --model org/name   # a Hugging Face model ID

Example
-------
>>> metadata_from_filename("/x/104_1b1_Al_sc_Litt3200.wav")["device"]
'Litt3200'
"""

import argparse
import contextlib
import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import FetchConfig
from speechbrain.utils.parameter_transfer import Pretrainer

from speechbrain_rsc.brains import EnsembleModel
from speechbrain_rsc.data.cycles import (
    RecordingError,
    _declared_data_bytes,
    fade,
    fade_length,
    resample,
    standardise,
)
from speechbrain_rsc.data.prompts import bts_prompt
from speechbrain_rsc.data.schema import (
    CLASS_NAMES,
    DEVICES,
    LOCATIONS,
    age_group,
    parse_stem,
)
from speechbrain_rsc.errors import RecipeError
from speechbrain_rsc.export import HPARAMS_FILE, load_exported_ensemble
from speechbrain_rsc.fused import FusedEnsemble, make_ensemble
from speechbrain_rsc.model_card import ENSEMBLE_FILE
from speechbrain_rsc.models.folding import for_inference
from speechbrain_rsc.models.weights import hub_snapshot
from speechbrain_rsc.trained_model import (
    CONFIG_FILE,
    NoModelError,
    check_members,
    load_trained,
    model_folders,
    read_config,
)

__all__ = [
    "RespiratoryClassifier",
    "load_classifier",
    "main",
    "cli",
    "model_folders",
]

# One breath cycle (inspiration and expiration) lasts 1 s at 60 breaths
# per minute, the fastest normal rate (newborns); adults breathe 12-20
# times a minute (3-5 s a cycle). A shorter clip cannot hold a whole
# cycle, and tiling it to the model's duration repeats a fragment.
MIN_CLIP_SECONDS = 1.0
PROMPT_DEFAULTS = {"location": "Tc", "device": "Meditron"}
METADATA_KEYS = ("location", "device", "age", "sex")
HUB_ID = re.compile(r"([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?")
TRUST_OPTION = "trust_remote_code=True (rsc-classify --trust_remote_code)"
# What a published model needs; its code (hyperparams.yaml) comes only
# with trust_remote_code.
MODEL_FILES = ["*.json", "*.ckpt", "README.md"]


class UntrustedModelError(RecipeError):
    """A model that can be loaded only by running its code."""


def model_files(source, revision=None):
    """The local folder of a model: ``source`` itself, or the snapshot of
    the Hugging Face model ``org/name[@revision]`` with its description and
    weights only (read from the cache when ``HF_HUB_OFFLINE=1``).

    Raises
    ------
    NoModelError
        Naming ``source``, when it is neither, or cannot be fetched.

    Example
    -------
    >>> model_files("results/nowhere/model")
    Traceback (most recent call last):
    ...
    speechbrain_rsc.trained_model.NoModelError: model results/nowhere/model: \
no such folder, and not a Hugging Face model ID (org/name); give a model \
folder, a folder of runs or a model ID
    """
    if Path(source).exists():
        return Path(source)
    match = HUB_ID.fullmatch(str(source))
    if match is None:
        raise NoModelError(
            f"model {source}: no such folder, and not a Hugging Face model "
            "ID (org/name); give a model folder, a folder of runs or a "
            "model ID"
        )
    repo_id, pinned = match.groups()
    try:
        return Path(
            hub_snapshot(  # every network wait bounded, pinned: cache first
                repo_id,
                revision=revision or pinned,
                allow_patterns=MODEL_FILES,
            )
        )
    except Exception as error:  # the hub raises many kinds
        raise NoModelError(
            f"model {source}: no such folder, and no Hugging Face model of "
            "that ID in the hub cache (HF_HUB_CACHE) nor, when online, on "
            "the hub; give an existing folder, or fetch the model once "
            f"online before using HF_HUB_OFFLINE=1 ({error})"
        ) from error


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


def check_metadata(metadata):
    """Refuse metadata a BTS prompt cannot use; return the given values.

    Example
    -------
    >>> check_metadata({"location": "Al", "age": None})
    {'location': 'Al'}
    >>> check_metadata({"device": "iPhone"})
    Traceback (most recent call last):
    ValueError: metadata device 'iPhone' is not an ICBHI device code: use \
one of Meditron, LittC2SE, Litt3200, AKGC417L
    """
    given = {k: v for k, v in (metadata or {}).items() if v not in (None, "")}
    unknown = sorted(set(given) - set(METADATA_KEYS))
    if unknown:
        raise ValueError(
            f"unknown metadata {', '.join(unknown)}: give only "
            f"{', '.join(METADATA_KEYS)}"
        )
    for key, codes in (("location", LOCATIONS), ("device", DEVICES)):
        if key in given and given[key] not in codes:
            raise ValueError(
                f"metadata {key} {given[key]!r} is not an ICBHI {key} code: "
                f"use one of {', '.join(codes)}"
            )
    if "sex" in given and given["sex"] not in ("M", "F"):
        raise ValueError(f"metadata sex {given['sex']!r}: use M or F")
    if "age" in given:
        try:
            parse_age(str(given["age"]))
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"metadata age: {error}") from None
    return given


def read_audio(path):
    """Read any audio file soundfile reads as mono float32.

    Arguments
    ---------
    path : str or Path

    Returns
    -------
    signal : numpy.ndarray
        1-D float32 samples (channels averaged).
    sample_rate : int
    notes : list of str
        What was changed (channels averaged).

    Raises
    ------
    RecordingError
        Naming the file: unreadable or not audio, truncated WAV, no
        samples, NaN or infinite samples.

    Example
    -------
    >>> path = str(getfixture("tmp_path")) + "/a.flac"
    >>> sf.write(path, np.full((4, 2), 0.5), 8000)
    >>> read_audio(path)
    (array([0.5, 0.5, 0.5, 0.5], dtype=float32), 8000, \
['2 channels averaged to mono'])
    """
    try:
        signal, rate = sf.read(str(path), dtype="float32", always_2d=True)
        declared = _declared_data_bytes(path)
    except Exception as error:  # libsndfile raises several error types
        raise RecordingError(
            f"{path}: unreadable audio ({error}); give a file soundfile "
            "reads (WAV, FLAC, OGG, ...)"
        ) from error
    if declared is not None:
        offset, size = declared
        held = Path(path).stat().st_size - offset
        if held < size:
            raise RecordingError(
                f"{path}: truncated, the header declares {size} bytes of "
                f"audio but the file holds {held}; give the complete file"
            )
    if signal.shape[0] == 0:
        raise RecordingError(f"{path}: no audio samples")
    if not np.isfinite(signal).all():
        raise RecordingError(
            f"{path}: holds NaN or infinite samples; give a valid recording"
        )
    notes = []
    if signal.shape[1] > 1:
        notes.append(f"{signal.shape[1]} channels averaged to mono")
    return signal.mean(axis=1, dtype=np.float32), int(rate), notes


def _prepare(model):
    """``model`` ready for inference: an ensemble fused, batch norms
    folded (see the module docstring).
    """
    if isinstance(model, EnsembleModel):
        return make_ensemble(list(model.members))
    if isinstance(model, FusedEnsemble):
        return model
    return for_inference(model.eval())


def _backbone_names(model):
    members = model.members if isinstance(model, EnsembleModel) else [model]
    return [getattr(m, "backbone_config", {}).get("name") for m in members]


class RespiratoryClassifier(Pretrained):
    """A trained student (or ensemble) as a SpeechBrain inference interface.

    Build it with :meth:`from_hparams` (a published folder or hub ID) or
    :meth:`from_folder` (a recipe's model folder or folder of runs).

    Arguments
    ---------
    modules : dict
        ``model``: a :class:`~speechbrain_rsc.models.backbone.Backbone` or an
        :class:`~speechbrain_rsc.brains.EnsembleModel` of them, weights
        loaded; it is prepared for inference here.
    hparams : dict
        ``sample_rate``, ``duration``, ``pad``, ``members``.
    run_opts : dict, optional
        E.g. ``{"device": "cpu"}``.
    freeze_params : bool
    """

    HPARAMS_NEEDED = ["sample_rate", "duration", "pad"]
    MODULES_NEEDED = ["model"]

    def __init__(
        self, modules=None, hparams=None, run_opts=None, freeze_params=True
    ):
        model = modules["model"]
        # The YAML's own references to the unprepared network (``model``,
        # ``modules``, the Pretrainer's loadables) would keep a second
        # copy of its weights alive: only plain values are kept.
        hparams = {
            key: value
            for key, value in (hparams or {}).items()
            if key != "modules"
            and not isinstance(value, (torch.nn.Module, Pretrainer))
        }
        hparams["backbones"] = _backbone_names(model)
        super().__init__(
            {"model": _prepare(model)}, hparams, run_opts, freeze_params
        )

    @property
    def uses_prompts(self):
        """Whether the model reads BTS metadata prompts."""
        return "bts" in self.hparams.backbones

    @classmethod
    def from_folder(cls, folder, device=None):
        """Load a trained-model folder, a folder of runs (an ensemble), or
        a folder written by ``export_ensemble``.

        Arguments
        ---------
        folder : str or Path
            ``<run>/model``, a folder of ``<run>/model`` folders, or a
            folder with ``hyperparams.yaml`` and no ``model.json``.
        device : str, optional
            Defaults to CUDA when available, else CPU.

        Raises
        ------
        ValueError
            When ensemble members expect different sample rates,
            durations or padding (naming them).
        """
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        folder = Path(folder)
        if (folder / ENSEMBLE_FILE).is_file():
            model, prep, members = load_exported_ensemble(folder)
        else:
            try:
                folders = model_folders(folder)
            except NoModelError:
                if not (folder / HPARAMS_FILE).is_file():
                    raise
                raise UntrustedModelError(
                    f"{folder} describes its model only by {HPARAMS_FILE} "
                    f"(no {CONFIG_FILE} nor {ENSEMBLE_FILE}): loading it "
                    "means running that file, which can execute any code. "
                    f"If you trust it, load it with {TRUST_OPTION}"
                ) from None
            configs = [read_config(f) for f in folders]
            prep = check_members(folders, configs)
            loaded = [load_trained(f)[0] for f in folders]
            model = loaded[0] if len(loaded) == 1 else EnsembleModel(loaded)
            members = [str(f) for f in folders]
        return cls(
            modules={"model": model},
            hparams={**prep, "members": members},
            run_opts={"device": device},
        )

    @classmethod
    def from_hparams(
        cls,
        source,
        hparams_file=HPARAMS_FILE,
        savedir=None,
        run_opts=None,
        trust_remote_code=False,
        revision=None,
        **kwargs,
    ):
        """Load a published model folder or Hugging Face model ID.

        By default nothing from the model is executed: the network is
        rebuilt from its declarative description (``model.json`` or
        ``ensemble.json``) and its safetensors weights. The model's
        ``hyperparams.yaml`` is what SpeechBrain would run (HyperPyYAML
        calls any function it names, ``!apply:os.system`` included); that
        happens only with ``trust_remote_code=True``, as in transformers.

        Arguments
        ---------
        source : str or Path
            A folder, or a hub ID ``org/name`` (``org/name@revision``).
        hparams_file : str
            The YAML SpeechBrain runs (``trust_remote_code`` only).
        savedir : str, optional
            Where SpeechBrain links the files (``trust_remote_code``).
        run_opts : dict, optional
            ``{"device": ...}``.
        trust_remote_code : bool
            Run the model's ``hyperparams.yaml`` (SpeechBrain's loading).
        revision : str, optional
            A hub branch, tag or commit.
        **kwargs
            Passed to SpeechBrain's ``from_hparams`` (trusted loading).

        Raises
        ------
        UntrustedModelError
            For a model described only by code, without the opt-in.
        """
        device = (run_opts or {}).get("device")
        if trust_remote_code:
            if revision is not None:
                config = kwargs.pop("fetch_config", None) or FetchConfig()
                kwargs["fetch_config"] = replace(config, revision=revision)
            return super().from_hparams(
                source=str(source),
                hparams_file=hparams_file,
                savedir=savedir,
                run_opts={"device": device} if device else run_opts,
                **kwargs,
            )
        return cls.from_folder(model_files(source, revision), device)

    def prepare_cycle(self, path):
        """An audio file as one model-ready cycle ``[1, samples]`` and the
        warnings about it.

        Raises
        ------
        RecordingError
            See :func:`read_audio`.
        """
        signal, rate, notes = read_audio(path)
        seconds = len(signal) / rate
        duration = self.hparams.duration
        if seconds < MIN_CLIP_SECONDS:
            notes.append(
                f"clip is {seconds:.2f} s, shorter than one breath cycle "
                f"({MIN_CLIP_SECONDS} s): it is tiled to {duration} s and "
                "the result may mean little; give a whole respiratory cycle"
            )
        elif seconds > duration + 1e-6:
            notes.append(
                f"clip is {seconds:.2f} s: only its first {duration} s are "
                "classified; cut the recording into its respiratory cycles"
            )
        sample_rate = self.hparams.sample_rate
        signal = resample(signal, rate, sample_rate)
        signal = fade(signal, fade_length(sample_rate))
        length = int(round(duration * sample_rate))
        cycle = standardise(
            signal, length, self.hparams.pad, fade_length(sample_rate)
        )
        return torch.from_numpy(cycle).unsqueeze(0), notes

    def load_cycle(self, path):
        """An audio file as one model-ready cycle ``[1, samples]``."""
        return self.prepare_cycle(path)[0]

    def prompt_and_missing(self, path, metadata=None):
        """The BTS prompt of a file and the metadata it had to do without.

        Returns
        -------
        prompt : str
        missing : list of str
            Of ``location``, ``device``, ``age``, ``sex``: neither given
            nor in an ICBHI file name.
        """
        meta = {**metadata_from_filename(path), **check_metadata(metadata)}
        missing = [key for key in METADATA_KEYS if key not in meta]
        age = meta.get("age")
        prompt = bts_prompt(
            meta.get("location", PROMPT_DEFAULTS["location"]),
            age_group(float(age)) if age is not None else "",
            meta.get("sex", ""),
            meta.get("device", PROMPT_DEFAULTS["device"]),
        )
        return prompt, missing

    def prompt(self, path, metadata=None):
        """The BTS prompt of a file from its metadata or ICBHI name."""
        return self.prompt_and_missing(path, metadata)[0]

    def _logits(self, wavs, lens, prompts):
        model = self.mods.model
        if hasattr(model, "member_logits"):
            member_logits = model.member_logits(wavs, lens, prompts)
            return member_logits.mean(0), member_logits.argmax(-1).T
        return model(wavs, lens, prompts), None

    def _classify_batch(self, ready):
        """Fill the results of ``(result, cycle, prompt)`` items."""
        wavs = torch.cat([cycle for _, cycle, _ in ready]).to(self.device)
        lens = torch.ones(len(ready), device=self.device)
        logits, votes = self._logits(wavs, lens, [p for *_, p in ready])
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        for row, (result, _, _) in enumerate(ready):
            if not bool(probs[row].isfinite().all()):
                result["error"] = (
                    f"{result['file']}: the model's output is not finite "
                    "(NaN or infinite logits), so no class can be given; "
                    "the model is broken (a diverged run?): use another"
                )
                continue
            result["class"] = CLASS_NAMES[int(probs[row].argmax())]
            result["probabilities"] = {
                name: float(p) for name, p in zip(CLASS_NAMES, probs[row])
            }
            if votes is not None:
                result["members"] = [
                    CLASS_NAMES[v] for v in votes[row].tolist()
                ]

    @torch.no_grad()
    def classify_files(self, paths, metadata=None, batch_size=8):
        """Classify many audio files, in batches; one result per file.

        A file that cannot be read gets a result with its ``error``; the
        others are still classified.

        Arguments
        ---------
        paths : list of str or Path
            Audio files of any format soundfile reads, rate and length.
        metadata : dict or list of dict, optional
            ``location``, ``device`` codes, ``age``, ``sex`` for BTS: one
            dict for every file, or one per file (``None`` for none).
        batch_size : int
            Cycles per forward pass.

        Returns
        -------
        list of dict
            In the order of ``paths``: ``file`` and either ``error`` or
            ``class``, ``probabilities`` (name -> p, summing to 1),
            ``warnings`` (list of str), for an ensemble ``members`` (each
            member's class), for BTS ``prompt`` and ``missing_metadata``.

        Raises
        ------
        ValueError
            For metadata that are not ICBHI codes, or a list of metadata
            not as long as ``paths``.
        """
        if int(batch_size) < 1:
            raise ValueError(
                f"batch_size {batch_size}: give a positive number of cycles"
            )
        paths = list(paths)
        if metadata is None or isinstance(metadata, dict):
            metadata = [metadata] * len(paths)
        metadata = list(metadata)
        if len(metadata) != len(paths):
            raise ValueError(
                f"{len(metadata)} metadata for {len(paths)} files: give one "
                "dict for all files or one per file"
            )
        for meta in metadata:
            check_metadata(meta)
        results = []
        # Read one batch of files at a time: memory stays that of a batch.
        for start in range(0, len(paths), batch_size):
            ready = []
            for path, meta in zip(
                paths[start : start + batch_size],
                metadata[start : start + batch_size],
            ):
                result = {"file": str(path)}
                results.append(result)
                try:
                    cycle, notes = self.prepare_cycle(path)
                except RecordingError as error:
                    result["error"] = str(error)
                    continue
                prompt, missing = self.prompt_and_missing(path, meta)
                if self.uses_prompts:
                    result["prompt"] = prompt
                    result["missing_metadata"] = missing
                    if missing:
                        notes.append(_missing_note(missing))
                result["warnings"] = notes
                ready.append((result, cycle, prompt))
            if ready:
                self._classify_batch(ready)
        return [_ordered(r) for r in results]

    def describe_file(self, path, metadata=None):
        """Classify one audio file, as a dict with the probabilities and
        warnings (an item of :meth:`classify_files`).

        Arguments
        ---------
        path : str
            Audio of any format soundfile reads, any rate and length.
        metadata : dict, optional
            ``location``, ``device`` codes, ``age``, ``sex`` for BTS.

        Raises
        ------
        RecordingError
            When the file cannot be read (see :func:`read_audio`), or the
            model's output for it is not finite.
        """
        (result,) = self.classify_files([path], metadata)
        if "error" in result:
            raise RecordingError(result["error"])
        return result

    @torch.no_grad()
    def classify_batch(self, wavs, wav_lens=None, prompts=None):
        """SpeechBrain's classifier interface (as ``EncoderClassifier`` and
        the ``cnn14-esc50`` model): cycles already at the model's sample
        rate and duration (see :meth:`load_cycle`).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.
        wav_lens : torch.Tensor, optional
            Relative lengths ``[batch]`` (default: all 1).
        prompts : list of str, optional
            BTS prompts (default: the prompt of a recording without
            metadata, see :data:`PROMPT_DEFAULTS`).

        Returns
        -------
        out_prob : torch.Tensor
            ``[batch, 4]`` class probabilities (softmax).
        score : torch.Tensor
            ``[batch]`` the highest probability.
        index : torch.Tensor
            ``[batch]`` its class index.
        text_lab : list of str
            Its class name (normal, crackle, wheeze, both).
        """
        wavs = wavs.to(self.device).float()
        if wav_lens is None:
            wav_lens = torch.ones(len(wavs), device=self.device)
        if prompts is None:
            prompts = [self.prompt_and_missing("", {})[0]] * len(wavs)
        logits, _ = self._logits(wavs, wav_lens.to(self.device), prompts)
        out_prob = torch.softmax(logits.float(), dim=-1)
        score, index = out_prob.max(dim=-1)
        return out_prob, score, index, [CLASS_NAMES[i] for i in index.tolist()]

    def classify_file(self, path, metadata=None):
        """Classify one audio file, SpeechBrain's way.

        Arguments
        ---------
        path : str
            Audio of any format soundfile reads, any rate and length.
        metadata : dict, optional
            ``location``, ``device`` codes, ``age``, ``sex`` for BTS.

        Returns
        -------
        tuple
            ``(out_prob, score, index, text_lab)`` of :meth:`classify_batch`
            for a batch of one.

        Raises
        ------
        RecordingError
            When the file cannot be read (see :func:`read_audio`).
        """
        cycle, _ = self.prepare_cycle(path)
        prompt = self.prompt_and_missing(path, metadata)[0]
        return self.classify_batch(cycle, prompts=[prompt])


_RESULT_ORDER = (
    "file",
    "error",
    "class",
    "probabilities",
    "members",
    "prompt",
    "missing_metadata",
    "warnings",
)


def _ordered(result):
    return {key: result[key] for key in _RESULT_ORDER if key in result}


def _missing_note(missing):
    """The warning for BTS metadata that were neither given nor found.

    Example
    -------
    >>> _missing_note(["device", "age"])  # doctest: +NORMALIZE_WHITESPACE
    "BTS prompt without device, age: device 'Meditron' used in its place, \
age left out of the prompt; give them (--location, --device_code, --age, \
--sex) or use an ICBHI file name for location and device"
    """
    parts = [
        f"{key} {PROMPT_DEFAULTS[key]!r} used in its place"
        for key in missing
        if key in PROMPT_DEFAULTS
    ]
    left_out = [key for key in missing if key not in PROMPT_DEFAULTS]
    if left_out:
        parts.append(f"{' and '.join(left_out)} left out of the prompt")
    return (
        f"BTS prompt without {', '.join(missing)}: {', '.join(parts)}; give "
        "them (--location, --device_code, --age, --sex) or use an ICBHI "
        "file name for location and device"
    )


def load_classifier(
    source, device=None, savedir=None, revision=None, trust_remote_code=False
):
    """A :class:`RespiratoryClassifier` from a folder or a hub model ID.

    Arguments
    ---------
    source : str or Path
        A model folder, a run folder, a folder of runs, an exported
        ensemble folder, or a Hugging Face model ID ``org/name`` or
        ``org/name@revision`` (read from the Hugging Face cache when
        ``HF_HUB_OFFLINE=1``).
    device : str, optional
        Defaults to CUDA when available, else CPU.
    savedir : str or Path, optional
        Where SpeechBrain links a hub model's files (trusted loading).
    revision : str, optional
        A hub branch, tag or commit.
    trust_remote_code : bool
        Run the model's ``hyperparams.yaml`` as SpeechBrain does (see
        :meth:`RespiratoryClassifier.from_hparams`).

    Raises
    ------
    NoModelError
        Naming ``source`` when it is neither, or a hub model that cannot
        be fetched.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not trust_remote_code:
        return RespiratoryClassifier.from_folder(
            model_files(source, revision), device
        )
    match = HUB_ID.fullmatch(str(source))
    if match and not Path(source).exists():
        source, revision = match.group(1), revision or match.group(2)
    return RespiratoryClassifier.from_hparams(
        source=str(source),
        savedir=savedir,
        revision=revision,
        run_opts={"device": device},
        trust_remote_code=True,
    )


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
                f"{name} is a folder, not an audio file: give audio files, "
                f"e.g. {path / '*.wav'}"
            )
        if not path.is_file():
            parser.error(
                f"audio file {name} does not exist: give the path of an "
                "audio file"
            )


def main(argv=None):
    """``rsc-classify FILE [FILE ...] --model DIR_OR_ID``: print one JSON
    line per file and return the results (see :func:`cli` for the exit
    status).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "files", nargs="+", help="audio files (WAV, FLAC, ...) to classify"
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model folder, folder of runs, or Hugging Face ID org/name",
    )
    parser.add_argument(
        "--revision", help="hub branch, tag or commit (or --model org/name@rev)"
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="run the model's hyperparams.yaml as SpeechBrain does; it can "
        "execute any code, so only for a model you trust (default: rebuild "
        "it from model.json / ensemble.json and safetensors weights)",
    )
    parser.add_argument(
        "--savedir",
        help="where a hub model's files are linked (--trust_remote_code)",
    )
    parser.add_argument(
        "--location", choices=list(LOCATIONS), help="chest location code"
    )
    parser.add_argument(
        "--device_code", choices=list(DEVICES), help="recording device code"
    )
    parser.add_argument(
        "--age", type=parse_age, help="patient age in years (>= 0)"
    )
    parser.add_argument("--sex", choices=["M", "F"], help="patient sex")
    parser.add_argument(
        "--device",
        type=parse_device,
        help="torch device: cpu, cuda or cuda:N (default: auto)",
    )
    parser.add_argument(
        "--batch_size", type=int, default=8, help="cycles per forward pass"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.batch_size < 1:
        parser.error(
            f"--batch_size {args.batch_size}: give a positive number of "
            "cycles per forward pass, e.g. 8"
        )
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
    # stdout holds the JSON lines only: what libraries print while the
    # model loads and runs (transformers' load reports) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        try:
            classifier = load_classifier(
                args.model,
                args.device,
                args.savedir,
                revision=args.revision,
                trust_remote_code=args.trust_remote_code,
            )
        except (RecipeError, FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        results = classifier.classify_files(
            args.files, metadata, batch_size=args.batch_size
        )
    for result in results:
        print(json.dumps(result))
        for note in result.get("warnings", []):
            print(f"warning: {result['file']}: {note}", file=sys.stderr)
        if "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
    return results


def cli(argv=None):
    """The ``rsc-classify`` console script: :func:`main`, as an exit status.

    Returns
    -------
    int
        0 when every file was classified (warnings included), 1 when any
        file could not be read (its line holds the ``error``; the others
        are classified). Bad arguments exit with 2 before any loading.
    """
    results = main(argv)
    failed = sum("error" in r for r in results)
    if failed:
        print(
            f"rsc-classify: {failed} of {len(results)} files could not be "
            "classified",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
