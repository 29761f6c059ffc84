"""Prompt tokenizers of the BTS backbone: an offline one, loading, checks.

``BTS()`` without pretrained weights cannot reach the RoBERTa tokenizer of
``laion/clap-htsat-unfused`` (no network), so it uses a small byte-level
BPE trained with the ``tokenizers`` library on every prompt
:func:`~speechbrain_rsc.data.prompts.bts_prompt` can write, with RoBERTa's
special tokens and ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3,
``<mask>`` 4), wrapped as a transformers ``RobertaTokenizer`` (fast).
Training is deterministic, so every build gives the same ids.

A tokenizer loaded from a folder is checked before use, because
transformers 5 may hand back an empty 5-token tokenizer instead of raising
when files are missing: see :func:`check_tokenizer`.

Example
-------
>>> tokenizer = build_prompt_tokenizer()
>>> len(tokenizer), tokenizer.pad_token_id
(384, 1)
>>> check_tokenizer(tokenizer, vocab_size=512, pad_token_id=1)
"""

import itertools
import json
import logging
import zlib

import torch

from speechbrain_rsc.data.prompts import bts_prompt
from speechbrain_rsc.data.schema import DEVICES, LOCATIONS
from speechbrain_rsc.errors import RecipeError

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
# A byte-level BPE holds at least its 256-symbol byte alphabet.
MIN_TOKENIZER_SIZE = 257


class TokenizerError(RecipeError, ValueError):
    """A tokenizer that cannot feed the text model it is paired with."""


def all_bts_prompts():
    """Every prompt ``bts_prompt`` writes, sorted, without repeats.

    All locations x age groups (adult, pediatric, unknown) x sexes (M, F,
    unknown) x devices.

    Example
    -------
    >>> prompts = all_bts_prompts()
    >>> len(prompts)
    252
    """
    combos = itertools.product(
        LOCATIONS, ("adult", "pediatric", ""), ("M", "F", ""), DEVICES
    )
    return sorted({bts_prompt(*combo) for combo in combos})


def build_prompt_tokenizer(prompts=None):
    """Train a byte-level BPE on ``prompts`` and wrap it for RoBERTa.

    Merging runs until every word of the corpus is one token (no size
    cap), so the vocabulary is the 256 byte symbols, the 5 special tokens
    and the merges.

    Arguments
    ---------
    prompts : list of str, optional
        Training text; by default :func:`all_bts_prompts`.

    Returns
    -------
    transformers.RobertaTokenizer
        A fast tokenizer with RoBERTa's special tokens and post-processing.

    Example
    -------
    >>> tokenizer = build_prompt_tokenizer(["a cat", "a dog"])
    >>> tokenizer.decode(tokenizer("a dog")["input_ids"])
    '<s>a dog</s>'
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    prompts = all_bts_prompts() if prompts is None else list(prompts)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1 << 20,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(prompts, trainer)
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges)
    logger.info(
        "Built an offline byte-level BPE prompt tokenizer (%d tokens, "
        "trained on %d prompts), not the RoBERTa tokenizer of LAION-CLAP",
        len(tokenizer),
        len(prompts),
    )
    return tokenizer


def check_tokenizer(tokenizer, vocab_size, pad_token_id, source="tokenizer"):
    """Refuse a tokenizer that cannot feed a text model of ``vocab_size``.

    Equality with ``vocab_size`` is not required (the offline tokenizer
    has 384 tokens for RoBERTa's 50265-row table); instead the tokenizer
    must be a real byte-level one whose ids fit the table:

    - more than 256 tokens (an empty transformers 5 stand-in has 5);
    - no more tokens than ``vocab_size`` rows;
    - the text model's padding id (RoBERTa positions count from it);
    - a BTS prompt encodes without ``<unk>`` and decodes back unchanged.

    Arguments
    ---------
    tokenizer : transformers tokenizer
    vocab_size : int
        Rows of the text model's word embedding table.
    pad_token_id : int
        The text model's padding id.
    source : str
        Where the tokenizer came from, for error messages.

    Raises
    ------
    TokenizerError

    Example
    -------
    >>> from transformers import RobertaTokenizer
    >>> try:
    ...     check_tokenizer(RobertaTokenizer(), 50265, 1, "empty")
    ... except TokenizerError as error:
    ...     print(str(error)[:22])
    empty: 5 tokens, fewer
    """
    size = len(tokenizer)
    problems = []
    if size < MIN_TOKENIZER_SIZE:
        problems.append(
            f"{size} tokens, fewer than a byte-level BPE's "
            f"{MIN_TOKENIZER_SIZE} (empty or failed load?)"
        )
    if size > vocab_size:
        problems.append(
            f"{size} tokens but the text model has {vocab_size} embeddings"
        )
    if tokenizer.pad_token_id != pad_token_id:
        problems.append(
            f"padding id {tokenizer.pad_token_id}, the text model expects "
            f"{pad_token_id}"
        )
    sample = all_bts_prompts()[0]
    ids = tokenizer(sample)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    if tokenizer.unk_token_id in ids or decoded != sample:
        problems.append(f"cannot encode and decode back '{sample}'")
    if problems:
        raise TokenizerError(f"{source}: " + "; ".join(problems))


def load_tokenizer(folder, vocab_size, pad_token_id):
    """Load a tokenizer from a local folder (HF layout) and check it.

    Arguments
    ---------
    folder : str or Path
        Written by ``tokenizer.save_pretrained`` (``tokenizer.json``, or
        ``vocab.json`` + ``merges.txt``, and ``tokenizer_config.json``).
    vocab_size : int
    pad_token_id : int

    Returns
    -------
    transformers tokenizer

    Raises
    ------
    TokenizerError
        When nothing usable loads from ``folder``.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True
        )
    except (OSError, ValueError) as error:
        raise TokenizerError(
            f"{folder}: no tokenizer could be loaded ({error})"
        ) from error
    check_tokenizer(tokenizer, vocab_size, pad_token_id, str(folder))
    return tokenizer


def tokenizer_to_tensor(tokenizer):
    """Serialise a fast tokenizer as a compressed ``uint8`` tensor.

    Lets a model's state dict carry the tokenizer it was trained with.

    Example
    -------
    >>> tokenizer = build_prompt_tokenizer(["a cat"])
    >>> restored = tokenizer_from_tensor(tokenizer_to_tensor(tokenizer))
    >>> restored("a cat")["input_ids"] == tokenizer("a cat")["input_ids"]
    True
    """
    payload = {
        "backend": tokenizer.backend_tokenizer.to_str(),
        "special_tokens": {
            k: v
            for k, v in tokenizer.special_tokens_map.items()
            if isinstance(v, str)
        },
    }
    data = zlib.compress(json.dumps(payload).encode("utf-8"), 6)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def tokenizer_from_tensor(tensor):
    """Rebuild the tokenizer written by :func:`tokenizer_to_tensor`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = zlib.decompress(tensor.detach().cpu().numpy().tobytes())
    payload = json.loads(data.decode("utf-8"))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(payload["backend"]),
        **payload["special_tokens"],
    )
