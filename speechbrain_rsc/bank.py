"""Logit banks: a trained model's logits for every cycle, keyed by cycle ID.

One bank file per trained model (teacher or student), written atomically.
Format (``speechbrain-rsc-bank/1``), readable with any safetensors reader:

- tensors ``logits/<split>`` (float32 ``[n, 4]``) and ``labels/<split>``
  (int64 ``[n]``) for each split the model was run on (train, valid, test);
- metadata key ``bank``: a JSON object with ``format``, ``ids`` (split ->
  list of cycle IDs, the row order of the tensors), ``fingerprints`` (split
  -> ID fingerprint, see :func:`ids_fingerprint`) and ``info`` (backbone,
  seed, checkpoint epoch, metrics per split, anything else the writer
  adds).

Rows are only ever looked up by ID; two banks may hold the same cycles in
different orders.

Example
-------
>>> import torch, tempfile, os
>>> bank = LogitBank(
...     ids={"test": ["a_0", "b_0"]},
...     logits={"test": torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])},
...     labels={"test": torch.tensor([0, 1])},
...     info={"backbone": "cnn6", "seed": 1},
... )
>>> path = os.path.join(tempfile.mkdtemp(), "bank.safetensors")
>>> bank.save(path)
>>> LogitBank.load(path).logits_for("test", ["b_0"]).tolist()
[[0.0, 2.0, 0.0, 0.0]]
"""

import csv
import hashlib
import json
import logging
import math
import numbers
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from speechbrain_rsc.atomic import write_atomically
from speechbrain_rsc.data.schema import CLASS_NAMES, N_CLASSES
from speechbrain_rsc.errors import RecipeError, SelectionError
from speechbrain_rsc.metrics import non_finite_rows, score_logits

logger = logging.getLogger(__name__)

BANK_FORMAT = "speechbrain-rsc-bank/1"
BANK_FILENAME = "bank.safetensors"
RETRAIN = "retrain that run or delete this file"


class NoBanksError(RecipeError, FileNotFoundError):
    """No logit bank where one was expected (no teachers trained yet)."""


class BankMismatchError(RecipeError, ValueError):
    """A bank cannot serve what it is asked for: it covers other cycles,
    no bank fits the selection, or its file or logits are unusable.
    """


class CorruptBankError(BankMismatchError):
    """A bank file whose header or data cannot be read."""


class NonFiniteLogitsError(BankMismatchError):
    """A bank whose logits hold NaN or infinity."""


def ids_fingerprint(ids):
    """A short hash of a set of cycle IDs, independent of their order.

    Example
    -------
    >>> ids_fingerprint(["b", "a"]) == ids_fingerprint(["a", "b"])
    True
    """
    digest = hashlib.sha256("\n".join(sorted(ids)).encode("utf-8"))
    return digest.hexdigest()[:16]


def read_manifest(csv_path):
    """Read a manifest's cycle IDs and labels in file order.

    Returns
    -------
    ids : list of str
    labels : torch.Tensor
        int64 labels.
    """
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ids = [row["ID"] for row in rows]
    labels = torch.tensor([int(row["label"]) for row in rows])
    return ids, labels


def _raw_header(path):
    """The JSON bytes of a safetensors header, checked against the file
    size; the data after it is not read.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        length = file.read(8)
        if len(length) < 8:
            raise CorruptBankError(
                f"{path}: {size} bytes, too short for a safetensors header"
            )
        (n,) = struct.unpack("<Q", length)
        if n > size - 8:
            raise CorruptBankError(
                f"{path}: header of {n} bytes but only {size - 8} follow "
                "its length"
            )
        return file.read(n)


class _BankFile:
    """A bank file known by its header; the tensors are read on first use.

    Arguments
    ---------
    path : Path
    raw : bytes
        The safetensors header, as :func:`_raw_header` read it.

    Raises
    ------
    CorruptBankError
        If the header is not that of a logit bank.
    """

    def __init__(self, path, raw):
        self.path = path
        self.raw = raw
        try:
            layout = json.loads(raw)
            meta = layout.pop("__metadata__", None) or {}
            bank = json.loads(meta["bank"]) if "bank" in meta else None
        except (ValueError, TypeError, AttributeError) as error:
            raise CorruptBankError(
                f"{path}: header is not valid JSON of a safetensors file "
                f"({error})"
            ) from error
        except RecursionError:
            raise CorruptBankError(
                f"{path}: header nested too deeply to be a logit bank's "
                f"(hand-edited or corrupt); {RETRAIN}"
            ) from None
        if not isinstance(bank, dict):
            raise CorruptBankError(f"{path}: not a logit bank (no header)")
        if bank.get("format") != BANK_FORMAT:
            raise CorruptBankError(
                f"{path}: format {bank.get('format')!r}, "
                f"expected {BANK_FORMAT!r}"
            )
        try:
            self.ids = dict(bank["ids"])
            self.info = dict(bank["info"])
            self.fingerprints = dict(bank["fingerprints"])
            self.shapes = {
                name: list(layout[name]["shape"])
                for split in self.ids
                for name in (f"logits/{split}", f"labels/{split}")
            }
            ends = [int(entry["data_offsets"][1]) for entry in layout.values()]
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CorruptBankError(
                f"{path}: incomplete bank header ({error!r} missing or "
                "malformed)"
            ) from error
        self.size = 8 + len(raw) + max(ends, default=0)
        self.tensors = None

    def shape(self, name):
        """The shape of tensor ``name``, from the header."""
        return self.shapes[name]

    def size_problem(self):
        """Why the file's size does not fit its header, or ``None``."""
        found = self.path.stat().st_size
        if found == self.size:
            return None
        problem = "truncated" if found < self.size else "too long"
        return (
            f"{self.path}: {problem} (expected {self.size} bytes, "
            f"found {found}); {RETRAIN}"
        )

    def read(self):
        """All tensors, read once.

        Raises
        ------
        CorruptBankError
            If the file is truncated, changed since its header was read, or
            its data cannot be decoded.
        """
        if self.tensors is not None:
            return self.tensors
        problem = self.size_problem()
        if problem:
            raise CorruptBankError(problem)
        if _raw_header(self.path) != self.raw:
            raise CorruptBankError(
                f"{self.path}: rewritten since its header was read; "
                "find the banks again"
            )
        try:
            with safe_open(str(self.path), framework="pt") as file:
                tensors = {name: file.get_tensor(name) for name in self.shapes}
        except SafetensorError as error:
            raise CorruptBankError(
                f"{self.path}: corrupt data ({error}); {RETRAIN}"
            ) from error
        for split, ids in self.ids.items():
            problem = _label_problem(tensors[f"labels/{split}"], split, ids)
            if problem:
                raise CorruptBankError(f"{self.path}: {problem}; {RETRAIN}")
        self.tensors = tensors
        return tensors


class _LazyTensors(MutableMapping):
    """Split -> tensor (``kind`` is ``logits`` or ``labels``), read from
    the bank file on first access; assigned tensors replace the file's.
    """

    def __init__(self, file, kind):
        self.file = file
        self.kind = kind
        self.assigned = {}

    def __getitem__(self, split):
        if split in self.assigned:
            return self.assigned[split]
        if split not in self.file.ids:
            raise KeyError(split)
        return self.file.read()[f"{self.kind}/{split}"]

    def __setitem__(self, split, tensor):
        self.assigned[split] = tensor

    def __delitem__(self, split):
        raise TypeError("a bank's splits cannot be deleted")

    def __iter__(self):
        return iter(dict.fromkeys([*self.file.ids, *self.assigned]))

    def __len__(self):
        return len(dict.fromkeys([*self.file.ids, *self.assigned]))

    def __repr__(self):
        return f"<{self.kind} of {self.file.path}, read on first use>"


def _shape(tensors, split):
    if isinstance(tensors, _LazyTensors) and split not in tensors.assigned:
        return list(tensors.file.shape(f"{tensors.kind}/{split}"))
    return list(tensors[split].shape)


def _shape_problem(logits, labels, split, n):
    """Why the ``split`` tensors cannot be those of ``n`` cycles, or
    ``None``.
    """
    logit_shape, label_shape = _shape(logits, split), _shape(labels, split)
    if logit_shape != [n, N_CLASSES]:
        return (
            f"'{split}' logits are {logit_shape}, expected [{n}, "
            f"{N_CLASSES}]: one row per cycle ID and one logit per class "
            f"({', '.join(CLASS_NAMES)})"
        )
    if label_shape != [n]:
        return f"'{split}' labels are {label_shape}, expected [{n}]"
    return None


def _label_problem(labels, split, ids):
    """Why ``labels`` are not classes 0-3, naming the first bad row; or
    ``None``.

    Example
    -------
    >>> _label_problem(torch.tensor([0, 99]), "test", ["a_0", "b_0"])
    "'test' label 99 at row 1 (cycle b_0) is not a class 0-3"
    """
    bad = (labels < 0) | (labels >= N_CLASSES)
    if labels.is_floating_point():
        bad |= labels != labels.floor()  # also NaN
    bad = bad.nonzero().flatten()
    if len(bad) == 0:
        return None
    row = int(bad[0])
    return (
        f"'{split}' label {labels[row].item()} at row {row} (cycle "
        f"{ids[row]}) is not a class 0-{N_CLASSES - 1}"
        + (f" ({len(bad)} such rows)" if len(bad) > 1 else "")
    )


@dataclass
class LogitBank:
    """A model's logits and labels per split, addressed by cycle ID."""

    ids: dict
    logits: dict
    labels: dict
    info: dict = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self):
        for split, ids in self.ids.items():
            n = len(ids)
            if len(set(ids)) != n:
                raise BankMismatchError(
                    f"{self.source}: duplicate cycle IDs in split '{split}'"
                )
            problem = _shape_problem(self.logits, self.labels, split, n)
            if problem is None and not isinstance(self.labels, _LazyTensors):
                problem = _label_problem(self.labels[split], split, ids)
            if problem:
                raise BankMismatchError(
                    f"{self.source}: {problem}; this is not a bank of the "
                    f"{N_CLASSES} ICBHI classes (hand-edited, or written by "
                    f"other code): {RETRAIN}"
                )
        self._rows = {
            split: {cid: i for i, cid in enumerate(ids)}
            for split, ids in self.ids.items()
        }

    @property
    def fingerprints(self):
        """Split -> fingerprint of its IDs."""
        return {s: ids_fingerprint(ids) for s, ids in self.ids.items()}

    @property
    def name(self):
        """A readable name: ``backbone/seed``."""
        return f"{self.info.get('backbone', '?')}/{self.info.get('seed', '?')}"

    def rows(self, split, ids):
        """Row indices of ``ids`` in ``split``; refuses any unknown ID."""
        if split not in self._rows:
            raise BankMismatchError(
                f"{self.source}: no '{split}' split in this bank "
                f"(has {sorted(self._rows)})"
            )
        index = self._rows[split]
        missing = [cid for cid in ids if cid not in index]
        if missing:
            raise BankMismatchError(
                f"{self.source}: {len(missing)} of {len(ids)} '{split}' cycle "
                f"IDs are missing from the bank (first: {missing[0]})"
            )
        return torch.tensor([index[cid] for cid in ids], dtype=torch.long)

    def logits_for(self, split, ids):
        """Logits ``[len(ids), 4]`` of the given cycles, in that order."""
        return self.logits[split][self.rows(split, ids)]

    def check_manifest(self, split, ids):
        """Refuse a manifest whose cycles differ from this bank's.

        Arguments
        ---------
        split : str
            Bank split to compare against.
        ids : list of str
            The manifest's cycle IDs.

        Raises
        ------
        BankMismatchError
            Naming how many manifest IDs the bank lacks and how many bank
            IDs the manifest lacks.
        """
        self.rows(split, ids)
        extra = len(self.ids[split]) - len(set(ids))
        if extra or self.fingerprints[split] != ids_fingerprint(ids):
            raise BankMismatchError(
                f"{self.source}: '{split}' holds {extra} cycle IDs absent "
                f"from the manifest (fingerprint {self.fingerprints[split]} "
                f"!= {ids_fingerprint(ids)}); the bank was made on other data"
            )

    def check_finite(self, split):
        """Refuse a split whose logits hold NaN or infinity.

        Raises
        ------
        NonFiniteLogitsError
            Naming the file, the split and how many rows are not finite.

        Example
        -------
        >>> nan = float("nan")
        >>> bank = LogitBank({"test": ["a"]}, {"test": torch.full((1, 4), nan)},
        ...                  {"test": torch.zeros(1)})
        >>> try:
        ...     bank.check_finite("test")
        ... except NonFiniteLogitsError as error:
        ...     print(error)  # doctest: +ELLIPSIS
        <memory>: 1 of 1 'test' rows hold non-finite logits (NaN or inf): ...
        """
        logits = self.logits[split]
        bad = non_finite_rows(logits)
        if bad:
            raise NonFiniteLogitsError(
                f"{self.source}: {bad} of {logits.shape[0]} '{split}' rows "
                "hold non-finite logits (NaN or inf): the run diverged; "
                "retrain it or choose other teachers"
            )

    def read_tensors(self):
        """Read the bank's tensors now, if it was opened lazily.

        Returns
        -------
        LogitBank
            Itself.

        Raises
        ------
        CorruptBankError
            Naming the file if its data is truncated or corrupt.
        """
        for tensors in (self.logits, self.labels):
            if isinstance(tensors, _LazyTensors):
                tensors.file.read()
        return self

    def score(self, split):
        """ICBHI Sp/Se/Score of this bank's own predictions on ``split``
        (NaN if any of its logits is not finite).
        """
        return score_logits(self.logits[split], self.labels[split])

    def save(self, path):
        """Write the bank to ``path`` atomically."""
        tensors = {}
        for split in self.ids:
            tensors[f"logits/{split}"] = self.logits[split].float().contiguous()
            tensors[f"labels/{split}"] = self.labels[split].long().contiguous()
        header = {
            "format": BANK_FORMAT,
            "ids": self.ids,
            "fingerprints": self.fingerprints,
            "info": self.info,
        }
        metadata = {"bank": json.dumps(header)}
        write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata))

    @classmethod
    def open(cls, path):
        """A bank read from its header alone; the tensors are read from
        ``path`` on first use (see :meth:`read_tensors`).

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        BankMismatchError
            Naming the file, if its header is not that of a logit bank.

        Example
        -------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "bank.safetensors")
        >>> LogitBank({"test": ["a"]}, {"test": torch.ones(1, 4)},
        ...           {"test": torch.zeros(1)}).save(path)
        >>> bank = LogitBank.open(path)
        >>> bank.ids, bank.logits["test"].tolist()
        ({'test': ['a']}, [[1.0, 1.0, 1.0, 1.0]])
        """
        path = Path(path)
        if not path.is_file():
            raise NoBanksError(f"no logit bank at {path}")
        file = _BankFile(path, _raw_header(path))
        bank = cls(
            file.ids,
            _LazyTensors(file, "logits"),
            _LazyTensors(file, "labels"),
            file.info,
            source=str(path),
        )
        if bank.fingerprints != file.fingerprints:
            raise BankMismatchError(f"{path}: fingerprints do not match IDs")
        return bank

    @classmethod
    def load(cls, path):
        """Read a bank written by :meth:`save`, checking its format."""
        bank = cls.open(path)
        return cls(
            bank.ids,
            dict(bank.logits),
            dict(bank.labels),
            bank.info,
            source=bank.source,
        )


def bank_order(bank):
    """Sort key of banks: integer seeds in numeric order, then any other
    seeds as text, then the file.

    Example
    -------
    >>> banks = [LogitBank({}, {}, {}, {"seed": s}) for s in (10, "x", 2)]
    >>> [b.info["seed"] for b in sorted(banks, key=bank_order)]
    [2, 10, 'x']
    """
    seed = bank.info.get("seed")
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return (0, int(seed), "", bank.source)
    return (1, 0, str(seed), bank.source)


def find_banks(folder):
    """Every bank under ``folder`` (``*/bank.safetensors`` and
    ``*.safetensors``) in :func:`bank_order`, read from their headers; the
    tensors are read when a bank is selected or used.

    Raises
    ------
    FileNotFoundError
        If the folder holds no bank.
    CorruptBankError
        Listing every bank whose header cannot be read: their seeds are
        unknown, so no selection can be trusted.
    """
    folder = Path(folder)
    paths = sorted(folder.glob(f"*/{BANK_FILENAME}"))
    paths += sorted(folder.glob("*.safetensors"))
    if not paths:
        raise NoBanksError(
            f"no logit banks in {folder} (expected <run>/{BANK_FILENAME}); "
            "train teachers first"
        )
    banks, unreadable = [], []
    for path in paths:
        try:
            banks.append(LogitBank.open(path))
        except (BankMismatchError, OSError) as error:
            unreadable.append(str(error))
    if unreadable:
        raise CorruptBankError(
            f"{len(unreadable)} of {len(paths)} banks in {folder} cannot be "
            "read, so their seeds are unknown and no selection of teachers "
            "can be trusted; retrain those runs or delete their files:\n  "
            + "\n  ".join(unreadable)
        )
    for bank in banks:
        problem = bank.logits.file.size_problem()
        if problem:
            logger.warning("%s; selecting this bank will fail", problem)
    return sorted(banks, key=bank_order)


def check_consistent(banks):
    """Refuse banks that were made on different cycles.

    Example
    -------
    >>> a = LogitBank({"test": ["x"]}, {"test": torch.zeros(1, 4)},
    ...               {"test": torch.zeros(1)})
    >>> b = LogitBank({"test": ["y"]}, {"test": torch.zeros(1, 4)},
    ...               {"test": torch.zeros(1)})
    >>> try:
    ...     check_consistent([a, b])
    ... except BankMismatchError as error:
    ...     print(error)
    <memory> and <memory> hold different 'test' cycles
    """
    first = banks[0]
    for other in banks[1:]:
        for split, fp in first.fingerprints.items():
            if other.fingerprints.get(split, fp) != fp:
                raise BankMismatchError(
                    f"{first.source} and {other.source} hold different "
                    f"'{split}' cycles"
                )


def check_k(k):
    """Refuse a number of teachers that is not a positive integer.

    Returns
    -------
    int

    Example
    -------
    >>> check_k(3)
    3
    >>> check_k(0)
    Traceback (most recent call last):
    ...
    speechbrain_rsc.errors.SelectionError: k must be a positive integer ...
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise SelectionError(
            f"k must be a positive integer (1, 2, ...), not {k!r}"
        )
    return int(k)


def _seed_list(banks):
    return ", ".join(str(b.info.get("seed")) for b in banks)


def _by_seeds(banks, seeds):
    """The banks of ``seeds``, in that order."""
    seeds = list(seeds)
    if not seeds:
        raise SelectionError(
            "seeds is empty: give at least one teacher seed, or none to "
            "choose by k"
        )
    repeated = list(dict.fromkeys(s for s in seeds if seeds.count(s) > 1))
    if repeated:
        raise SelectionError(
            f"duplicate seeds {repeated} in {seeds}: each teacher can be "
            "chosen once; list distinct seeds"
        )
    holders = {b.info.get("seed"): b for b in sorted(banks, key=bank_order)}
    missing = [s for s in seeds if s not in holders]
    if missing:
        raise BankMismatchError(
            f"no bank for seeds {missing} (have {list(holders)})"
        )
    return [holders[s] for s in seeds]


def check_distinct_seeds(banks):
    """Refuse two banks of one seed: the same teacher, or a copied run
    folder, would count twice in an ensemble or a distillation.

    Raises
    ------
    BankMismatchError
        Naming the seed and every file that holds it.

    Example
    -------
    >>> banks = [LogitBank({}, {}, {}, {"seed": 1}, source=f"{run}/bank")
    ...          for run in ("a", "b")]
    >>> try:
    ...     check_distinct_seeds(banks)
    ... except BankMismatchError as error:
    ...     print(error)  # doctest: +ELLIPSIS
    seed 1 is held by 2 banks (a/bank, b/bank): ...
    """
    holders = {}
    for bank in sorted(banks, key=bank_order):
        holders.setdefault(bank.info.get("seed"), []).append(bank)
    for seed, held in holders.items():
        if len(held) > 1:
            files = ", ".join(b.source for b in held)
            raise BankMismatchError(
                f"seed {seed} is held by {len(held)} banks ({files}): two "
                "runs of one seed are one teacher counted twice (a copied "
                "run folder?); keep one of them in the folder"
            )


def _recorded_score(bank, split):
    """The Score the bank's header records for ``split``, if any."""
    return ((bank.info.get("metrics") or {}).get(split) or {}).get("score")


def _rank(banks, split):
    """``banks`` by Score on ``split``, best first; refuses any without."""
    scores = [_recorded_score(b, split) for b in banks]
    unranked = [
        (b, score)
        for b, score in zip(banks, scores)
        if not (isinstance(score, numbers.Real) and math.isfinite(score))
    ]
    if unranked:
        if split == "valid" and all(not b.ids.get(split) for b, _ in unranked):
            advice = (
                "the valid split is empty (the teachers were trained with "
                "protocol: paper): curate on test"
            )
        else:
            advice = "retrain those runs, or choose the teachers by seeds"
        named = "; ".join(
            f"{b.source} (seed {b.info.get('seed')}: {score})"
            for b, score in unranked
        )
        raise BankMismatchError(
            f"cannot rank teachers by their '{split}' Score: {len(unranked)} "
            f"of {len(banks)} banks have none (NaN or missing): {named}; "
            + advice
        )
    order = sorted(range(len(banks)), key=lambda i: -scores[i])
    return [banks[i] for i in order]


def select_banks(banks, k=None, seeds=None, curate_on=None):
    """Choose teachers: the first ``k`` in :func:`bank_order`, explicit
    ``seeds``, or the top ``k`` by Score on the ``curate_on`` split
    (``"valid"`` or ``"test"``; ties in seed order). The chosen banks'
    tensors are read, so a corrupt file is named now.

    Arguments
    ---------
    banks : list of LogitBank
    k : int, optional
        A positive number of teachers (default: all); ignored with
        ``seeds``.
    seeds : list, optional
        Distinct seeds, chosen in the given order.
    curate_on : str, optional
        Rank by this split's Score; every bank needs a finite one.

    Raises
    ------
    ValueError
        For a ``k`` that is not a positive integer, or empty or repeated
        ``seeds``.
    BankMismatchError
        If two banks hold one seed (:func:`check_distinct_seeds`), there
        are fewer than ``k`` banks, no bank for a seed, or a
        bank without a Score to rank it by; also for a chosen bank whose
        file is corrupt (:class:`CorruptBankError`).

    Example
    -------
    >>> mk = lambda s, v: LogitBank({}, {}, {}, {"seed": s,
    ...     "metrics": {"valid": {"score": v}}})
    >>> banks = [mk(1, 60.0), mk(2, 70.0), mk(3, 65.0)]
    >>> [b.info["seed"] for b in select_banks(banks, k=2)]
    [1, 2]
    >>> [b.info["seed"] for b in select_banks(banks, k=2, curate_on="valid")]
    [2, 3]
    >>> [b.info["seed"] for b in select_banks(banks, seeds=[3, 1])]
    [3, 1]
    """
    if k is not None:
        k = check_k(k)
    check_distinct_seeds(banks)
    if seeds is not None:
        chosen = _by_seeds(banks, seeds)
    else:
        ranked = sorted(banks, key=bank_order)
        if curate_on is not None:
            ranked = _rank(ranked, curate_on)
        k = len(ranked) if k is None else k
        if k > len(ranked):
            raise BankMismatchError(
                f"asked for {k} teachers, found {len(ranked)} banks "
                f"(seeds {_seed_list(sorted(banks, key=bank_order))}): "
                "lower k or train more teachers"
            )
        chosen = ranked[:k]
    return [bank.read_tensors() for bank in chosen]


def stack_logits(banks, split, ids):
    """Logits of ``ids`` from each bank, ``[k, len(ids), 4]``.

    Raises
    ------
    BankMismatchError
        If the banks hold different cycles or one lacks an ID.
    NonFiniteLogitsError
        If a bank's logits on ``split`` hold NaN or infinity.
    """
    check_consistent(banks)
    for bank in banks:
        bank.check_finite(split)
    return torch.stack([b.logits_for(split, ids) for b in banks])
