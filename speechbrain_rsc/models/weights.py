"""Where pretrained weights come from: one resolver for every backbone.

:func:`resolve_weights` turns a ``pretrained_path`` into a local file or
folder and a record of what was loaded. A ``pretrained_path`` is one of:

- an existing local file or folder (``~`` expanded): used as it is;
- a Hugging Face hub ID ``org/name`` or ``org/name@revision`` (branch, tag
  or commit): ``huggingface_hub.snapshot_download`` brings the repository
  into the hub cache (``HF_HUB_CACHE``, read when called) and returns its
  snapshot folder. With ``HF_HUB_OFFLINE=1`` only the cache is read.
  Weights come as ``*.safetensors``; ``*.bin``/``*.pt``/``*.pth`` files
  are fetched only when the snapshot has no safetensors weights;
- an ``http(s)://`` or ``file://`` URL of one file, downloaded with
  ``torch.hub.download_url_to_file`` to
  ``torch.hub.get_dir()/checkpoints/<file name>`` (``$TORCH_HOME/hub``;
  the file name is the URL's last path segment, percent-decoded; a
  ``file://`` URL's query is ignored). A file already there is reused
  without any network access.
  The file's sha256 is checked when the URL carries one: a fragment
  ``#sha256=<hex>`` (the full hash or a prefix of at least 8 digits), or
  else torch.hub's naming convention ``<name>-<hex>.<ext>`` (8 or more
  hex digits before the last dot, as in ``resnet18-f37072fd.pth``). A
  mismatch is an error, never a silent reload.

A string that is none of these, or that names a source which cannot be
had (offline and not cached, 404, bad hash ...), raises
:class:`WeightsUnavailableError`, saying how to get the weights or to
train from random weights with ``--use_pretrained False``. Nothing falls
back to random weights.

The record, a JSON-able dict that :func:`~speechbrain_rsc.models.
build_backbone` attaches to the model as ``weights_source``:

- ``source``: the string given;
- ``kind``: ``"path"``, ``"hub"`` or ``"url"``;
- ``revision``: the hub commit hash (``None`` for paths and URLs);
- ``sha256``: of the weights file; for a folder, of its main weights
  file (``model.safetensors``, else ``pytorch_model.bin``, else the
  shard index, else its only weight file; ``None`` if it has none);
- ``file``: the name of the hashed file (within the folder).

Default sources (the paper's, :data:`DEFAULT_SOURCES`), used when
``use_pretrained`` is set without a ``pretrained_path``:

=================  ===================================================
backbone           default source
=================  ===================================================
audio_clap, bts    ``laion/clap-htsat-unfused`` (hub: HTSAT-tiny +
                   RoBERTa; BTS takes the snapshot's tokenizer)
ast                ``MIT/ast-finetuned-audioset-10-10-0.4593`` (hub;
                   ImageNet + AudioSet)
cnn6               PANNs ``Cnn6_mAP=0.343.pth``, Zenodo record 3960586
                   (:data:`CNN6_SOURCE`; the record the Patch-Mix CL
                   code's ``load_sl_official_weights`` fetches from)
resnet18           ``timm/resnet18.tv_in1k``: torchvision's
                   ``IMAGENET1K_V1`` weights (``resnet18-f37072fd.pth``)
efficientnet_b0    ``timm/efficientnet_b0.ra_in1k``: see below
=================  ===================================================

EfficientNet-B0: the reference code uses torchvision's ``IMAGENET1K_V1``,
which is not on the timm hub; torchvision notes those weights were
"ported from rwightman/pytorch-image-models" (timm), with ImageNet top-1
77.692%. torchvision 0.11 published them as
``efficientnet_b0_rwightman-3dd342df.pth``: the sha256 prefix (torch.hub
file names carry one) of timm's ``efficientnet_b0_ra-3dd342df.pth``,
the file of ``efficientnet_b0.ra_in1k`` (RandAugment). timm's other
B0 weights, ``ra4_e3600_r224_in1k``, are a later retraining. So
``ra_in1k`` holds torchvision's weights in timm's key layout, as far as
can be told without downloading both.

Example
-------
>>> parse_hub_id("MIT/ast-finetuned-audioset-10-10-0.4593@main")
('MIT/ast-finetuned-audioset-10-10-0.4593', 'main')
>>> parse_hub_id("models/resnet18.pth") is None  # a file name, not a hub ID
True
>>> url_file(CNN6_SOURCE)
('Cnn6_mAP=0.343.pth', None)
"""

import logging
import os
import re
import urllib.parse
from pathlib import Path

from speechbrain_rsc.errors import RecipeError
from speechbrain_rsc.hashing import sha256_file
from speechbrain_rsc.models.checkpoints import find_weights_file

logger = logging.getLogger(__name__)

CLAP_SOURCE = "laion/clap-htsat-unfused"
AST_SOURCE = "MIT/ast-finetuned-audioset-10-10-0.4593"
CNN6_SOURCE = (
    "https://zenodo.org/record/3960586/files/Cnn6_mAP%3D0.343.pth?download=1"
)
RESNET18_SOURCE = "timm/resnet18.tv_in1k"
EFFICIENTNET_B0_SOURCE = "timm/efficientnet_b0.ra_in1k"
DEFAULT_SOURCES = {
    "cnn6": CNN6_SOURCE,
    "resnet18": RESNET18_SOURCE,
    "efficientnet_b0": EFFICIENTNET_B0_SOURCE,
    "ast": AST_SOURCE,
    "audio_clap": CLAP_SOURCE,
    "bts": CLAP_SOURCE,
}

URL_SCHEMES = ("http", "https", "file")
# Names with these endings are files, even when shaped like org/name.
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")
HUB_ID = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")
# torch.hub's convention name-<sha256 prefix>.ext, with 8 digits at least.
NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")
HEX = re.compile(r"^[0-9a-f]{8,64}$")
# Fetched only when a snapshot holds no safetensors weights.
HUB_PICKLES = ["*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt"]
# Formats of other frameworks (Keras, Flax, ONNX, rust-bert .ot, TFLite,
# GGUF).
HUB_IGNORED = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf"]
RANDOM_WEIGHTS = "train from random weights with --use_pretrained False"


class WeightsUnavailableError(RecipeError, RuntimeError):
    """Pretrained weights that cannot be had from the source given.

    Arguments
    ---------
    message : str
        What failed and the ways out.
    backbone : str, optional
    source : str, optional
    """

    def __init__(self, message, backbone=None, source=None):
        super().__init__(message)
        self.backbone = backbone
        self.source = source


def parse_hub_id(source):
    """``(repo_id, revision)`` of ``org/name[@revision]``, else ``None``.

    A string ending in a weight-file suffix (``.pth``, ``.safetensors``
    ...) is taken for a file name, not a hub ID.

    Example
    -------
    >>> parse_hub_id("laion/clap-htsat-unfused")
    ('laion/clap-htsat-unfused', None)
    >>> parse_hub_id("/abs/path") is None
    True
    """
    match = HUB_ID.match(source)
    if match is None or match.group(1).endswith(FILE_SUFFIXES):
        return None
    return match.group(1), match.group(2)


def url_file(url):
    """The cache file name of ``url`` and the sha256 (prefix) it carries.

    Example
    -------
    >>> url_file("https://x.org/w/resnet18-f37072fd.pth")
    ('resnet18-f37072fd.pth', 'f37072fd')
    >>> url_file("file:///tmp/w.pth#sha256=" + "ab" * 32)[1][:6]
    'ababab'
    """
    split = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(split.path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{url}: the URL names no file to save")
    fragment = urllib.parse.parse_qs(split.fragment)
    if "sha256" in fragment:
        expected = fragment["sha256"][0].lower()
        if not HEX.match(expected):
            raise ValueError(
                f"{url}: sha256 must be 8 to 64 hex digits, got '{expected}'"
            )
        return name, expected
    match = NAME_HASH.search(name)
    return name, match.group(1) if match else None


def _record(source, kind, path, revision=None):
    path = Path(path)
    weights = find_weights_file(path) if path.is_dir() else path
    return {
        "source": source,
        "kind": kind,
        "revision": revision,
        "sha256": None if weights is None else sha256_file(weights),
        "file": None if weights is None else weights.name,
    }


def _offline():
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return constants.HF_HUB_OFFLINE
    return value.strip().lower() in ("1", "on", "yes", "true")


def _unavailable(backbone, source, reason, ways):
    return WeightsUnavailableError(
        f"pretrained weights for backbone '{backbone}' are unavailable from "
        f"'{source}': {reason}. Either {ways}, or {RANDOM_WEIGHTS}.",
        backbone,
        source,
    )


def _from_hub(source, repo_id, revision, backbone, cache_dir):
    from huggingface_hub import snapshot_download

    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    offline = _offline()
    kwargs = dict(
        repo_id=repo_id,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=offline,
    )
    try:
        folder = snapshot_download(
            **kwargs, ignore_patterns=HUB_PICKLES + HUB_IGNORED
        )
        if find_weights_file(folder) is None and not offline:
            folder = snapshot_download(**kwargs, allow_patterns=HUB_PICKLES)
    except Exception as error:
        rev = f" --revision {revision}" if revision else ""
        where = cache_dir or "the default hub cache (HF_HUB_CACHE)"
        offline_note = " (HF_HUB_OFFLINE=1: the cache only)" if offline else ""
        ways = (
            f"get them on a machine with network access with `hf download "
            f"{repo_id}{rev}` (huggingface_hub's CLI; `huggingface-cli "
            f"download` in older versions) and copy that hub cache to "
            f"{where}, or download them to a folder (`--local-dir DIR`) and "
            "set pretrained_path to it"
        )
        raise _unavailable(
            backbone,
            source,
            f"the Hugging Face hub ID '{repo_id}' is not in the hub "
            f"cache{offline_note} and could not be downloaded "
            f"({type(error).__name__}: {error}); no local file or folder "
            "of that name exists either",
            ways,
        ) from error
    return folder, _record(source, "hub", folder, Path(folder).name)


def _from_url(source, backbone):
    import torch.hub

    name, expected = url_file(source)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / name
    split = urllib.parse.urlsplit(source)._replace(fragment="")
    if split.scheme.lower() == "file":
        # urllib would read a file:// query as part of the file name.
        split = split._replace(query="")
    fetch = urllib.parse.urlunsplit(split)
    ways = (
        f"download it to {dest} (e.g. `curl -L -o '{dest}' '{fetch}'`) "
        "or set pretrained_path to a local copy"
    )
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        logger.info("Downloading %s to %s", fetch, dest)
        try:
            torch.hub.download_url_to_file(fetch, str(dest), expected)
        except Exception as error:
            raise _unavailable(
                backbone,
                source,
                f"download failed ({type(error).__name__}: {error})",
                ways,
            ) from error
    record = _record(source, "url", dest)
    if expected is not None and not record["sha256"].startswith(expected):
        raise _unavailable(
            backbone,
            source,
            f"the cached {dest} has sha256 {record['sha256']}, the URL "
            f"expects {expected}...",
            f"delete that file and retry, {ways}",
        )
    return str(dest), record


def resolve_weights(source, backbone="model", cache_dir=None):
    """A local path for ``source`` and the record of what it holds.

    Arguments
    ---------
    source : str or Path
        A local file or folder, a hub ID ``org/name[@revision]`` or an
        ``http(s)://``/``file://`` URL (see the module docstring).
    backbone : str
        Named in errors.
    cache_dir : str, optional
        Hub cache; default ``HF_HUB_CACHE`` as set when called, else
        huggingface_hub's default.

    Returns
    -------
    path : str
        The local file or folder.
    record : dict
        ``source``, ``kind``, ``revision``, ``sha256``, ``file``.

    Raises
    ------
    WeightsUnavailableError
        Naming the backbone, the source and the ways out.

    Example
    -------
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/w.pth"
    >>> torch.save({"w": torch.ones(1)}, path)
    >>> local, record = resolve_weights(path)
    >>> local == path, record["kind"], record["revision"]
    (True, 'path', None)
    """
    source = str(source)
    local = Path(source).expanduser()
    if local.exists():
        return str(local), _record(source, "path", local)
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in URL_SCHEMES:
        return _from_url(source, backbone)
    hub = parse_hub_id(source)
    if hub is not None:
        return _from_hub(source, *hub, backbone, cache_dir)
    raise _unavailable(
        backbone,
        source,
        "no such local file or folder (and not a hub ID org/name nor an "
        "http(s):// or file:// URL)",
        "put the weights there or set pretrained_path to where they are",
    )
