"""Banks that cannot be trusted are refused by name: non-finite logits,
truncated data, unreadable headers.
"""

import math
import re
import struct

import pytest
import torch

from speechbrain_rsc.bank import (
    BankMismatchError,
    LogitBank,
    find_banks,
    select_banks,
    stack_logits,
)
from speechbrain_rsc.ensemble import evaluate_banks, sweep

IDS = ["r1_0", "r1_1", "r2_0"]
LABELS = torch.tensor([0, 1, 3])
# 3 rows x 4 float32 logits + 3 int64 labels
DATA_BYTES = 3 * 4 * 4 + 3 * 8


def bank_of(seed, logits=None):
    if logits is None:
        logits = torch.eye(4)[[0, 1, 3]] * seed
    return LogitBank(
        {"train": IDS},
        {"train": logits},
        {"train": LABELS},
        {"backbone": "cnn6", "seed": seed},
    )


def save_three(folder, change=None):
    """Banks of seeds 1, 2, 3 in folder/<seed>/bank.safetensors."""
    paths = {}
    for seed in (1, 2, 3):
        bank = bank_of(seed)
        if change is not None:
            change(seed, bank)
        paths[seed] = folder / str(seed) / "bank.safetensors"
        paths[seed].parent.mkdir()
        bank.save(paths[seed])
    return paths


def header_length(path):
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_non_finite_teacher_logits_are_refused_by_file_split_and_count(
    tmp_path,
):
    def poison(seed, bank):
        if seed == 2:
            bank.logits["train"][0, 1] = math.nan
            bank.logits["train"][2, 3] = math.inf

    paths = save_three(tmp_path, poison)
    banks = find_banks(tmp_path)
    message = re.escape(
        f"{paths[2]}: 2 of 3 'train' rows hold non-finite logits"
    )
    with pytest.raises(BankMismatchError, match=message):
        stack_logits(banks, "train", IDS)
    with pytest.raises(BankMismatchError, match=message):
        evaluate_banks(banks[:2], "train")
    # the others are fine; and the bank's own Score is NaN, never 50
    assert stack_logits([banks[0], banks[2]], "train", IDS).shape == (2, 3, 4)
    score = banks[1].score("train")
    assert all(math.isnan(value) for value in score.values())
    assert banks[0].score("train") == {"sp": 100.0, "se": 100.0, "score": 100.0}


def test_truncated_bank_fails_only_when_selected(tmp_path):
    paths = save_three(tmp_path)
    size = paths[2].stat().st_size
    assert size == 8 + header_length(paths[2]) + DATA_BYTES
    paths[2].write_bytes(paths[2].read_bytes()[:-10])
    banks = find_banks(tmp_path)
    assert [b.info["seed"] for b in banks] == [1, 2, 3]
    chosen = select_banks(banks, seeds=[3, 1])
    expected = torch.stack(
        [bank_of(3).logits["train"], bank_of(1).logits["train"]]
    )
    assert torch.equal(stack_logits(chosen, "train", IDS), expected)
    assert select_banks(banks, k=1)[0].info["seed"] == 1
    truncated = (
        re.escape(f"{paths[2]}: truncated (expected {size} bytes, found ")
        + rf"{size - 10}\).*retrain that run or delete"
    )
    for selection in ({"seeds": [2]}, {"k": 2}):
        with pytest.raises(BankMismatchError, match=truncated):
            select_banks(banks, **selection)
    with pytest.raises(BankMismatchError, match=truncated):
        sweep(banks, "train")
    with pytest.raises(BankMismatchError, match=truncated):
        LogitBank.load(paths[2])


def test_find_banks_lists_every_unreadable_header(tmp_path):
    paths = save_three(tmp_path)
    paths[1].write_bytes(b"\x05\x00")  # not even a header length
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(BankMismatchError) as error:
        find_banks(tmp_path)
    message = str(error.value)
    assert "2 of 3 banks" in message and "seeds are unknown" in message
    assert f"{paths[1]}: 2 bytes, too short" in message
    assert f"{paths[3]}: header is not valid JSON" in message
    assert str(paths[2]) not in message


def test_header_whose_length_exceeds_the_file_is_unreadable(tmp_path):
    paths = save_three(tmp_path)
    data = paths[2].read_bytes()
    paths[2].write_bytes(struct.pack("<Q", len(data)) + data[8:])
    with pytest.raises(
        BankMismatchError, match=re.escape(f"{paths[2]}: header of")
    ):
        find_banks(tmp_path)


def test_lazily_read_bank_behaves_like_a_loaded_one(tmp_path):
    paths = save_three(tmp_path)
    lazy = find_banks(tmp_path)[1]
    loaded = LogitBank.load(paths[2])
    assert lazy.ids == loaded.ids and lazy.info == loaded.info
    assert lazy.name == "cnn6/2" and lazy.source == str(paths[2])
    assert lazy.fingerprints == loaded.fingerprints
    assert lazy.rows("train", ["r2_0", "r1_0"]).tolist() == [2, 0]
    lazy.check_manifest("train", IDS[::-1])
    assert torch.equal(lazy.logits["train"], loaded.logits["train"])
    assert torch.equal(lazy.labels["train"], LABELS)
    assert torch.equal(
        lazy.logits_for("train", ["r1_1"]), torch.tensor([[0.0, 2.0, 0, 0]])
    )
    assert lazy.score("train") == loaded.score("train")
    assert sorted(lazy.logits) == ["train"]
