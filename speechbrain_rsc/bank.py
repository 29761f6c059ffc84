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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from speechbrain_rsc.atomic import write_atomically
from speechbrain_rsc.metrics import icbhi_score

BANK_FORMAT = "speechbrain-rsc-bank/1"
BANK_FILENAME = "bank.safetensors"


class BankMismatchError(ValueError):
    """A bank does not cover the cycles it is asked for."""


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
            if self.logits[split].shape[0] != n:
                raise BankMismatchError(
                    f"{self.source}: {n} IDs but "
                    f"{self.logits[split].shape[0]} logit rows in '{split}'"
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

    def score(self, split):
        """ICBHI Sp/Se/Score of this bank's own predictions on ``split``."""
        return icbhi_score(self.logits[split].argmax(-1), self.labels[split])

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
    def load(cls, path):
        """Read a bank written by :meth:`save`, checking its format."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no logit bank at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "bank" not in meta:
                raise BankMismatchError(f"{path}: not a logit bank (no header)")
            header = json.loads(meta["bank"])
            if header.get("format") != BANK_FORMAT:
                raise BankMismatchError(
                    f"{path}: format {header.get('format')!r}, "
                    f"expected {BANK_FORMAT!r}"
                )
            splits = header["ids"]
            logits = {s: f.get_tensor(f"logits/{s}") for s in splits}
            labels = {s: f.get_tensor(f"labels/{s}") for s in splits}
        bank = cls(splits, logits, labels, header["info"], source=str(path))
        if bank.fingerprints != header["fingerprints"]:
            raise BankMismatchError(f"{path}: fingerprints do not match IDs")
        return bank


def find_banks(folder):
    """Load every bank under ``folder`` (``*/bank.safetensors`` and
    ``*.safetensors``), sorted by seed.

    Raises
    ------
    FileNotFoundError
        If the folder holds no bank.
    """
    folder = Path(folder)
    paths = sorted(folder.glob(f"*/{BANK_FILENAME}"))
    paths += sorted(folder.glob("*.safetensors"))
    if not paths:
        raise FileNotFoundError(
            f"no logit banks in {folder} (expected <run>/{BANK_FILENAME}); "
            "train teachers first"
        )
    banks = [LogitBank.load(p) for p in paths]
    return sorted(banks, key=lambda b: (str(b.info.get("seed")), b.source))


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


def select_banks(banks, k=None, seeds=None, curate_on=None):
    """Choose teachers: the first ``k`` seeds, explicit ``seeds``, or the top
    ``k`` by Score on the ``curate_on`` split (``"valid"`` or ``"test"``).

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
    if seeds is not None:
        by_seed = {b.info.get("seed"): b for b in banks}
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise BankMismatchError(
                f"no bank for seeds {missing} (have {sorted(by_seed)})"
            )
        return [by_seed[s] for s in seeds]
    if curate_on is not None:
        banks = sorted(
            banks,
            key=lambda b: b.info["metrics"][curate_on]["score"],
            reverse=True,
        )
    k = len(banks) if k is None else k
    if k > len(banks):
        raise BankMismatchError(f"asked for {k} teachers, found {len(banks)}")
    return banks[:k]


def stack_logits(banks, split, ids):
    """Logits of ``ids`` from each bank, ``[k, len(ids), 4]``."""
    check_consistent(banks)
    return torch.stack([b.logits_for(split, ids) for b in banks])


def mean_logits(member_logits):
    """The ensemble's logits: the mean over members (dim 0).

    This is the one averaging rule of the project, used by ensemble
    evaluation from banks and by the ensemble model on audio.

    Example
    -------
    >>> mean_logits(torch.tensor([[[1.0, 3.0]], [[3.0, 1.0]]])).tolist()
    [[2.0, 2.0]]
    """
    return member_logits.mean(dim=0)
