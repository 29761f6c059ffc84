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
- an ``http(s)://`` or ``file://`` URL of one file, downloaded once by
  :func:`download_url` (a socket timeout on every wait, streamed to a
  temporary file, hashed, renamed) into a folder of torch.hub's cache
  keyed by the URL (:func:`url_cache_path`:
  ``$TORCH_HOME/hub/checkpoints/by_url/<sha256 of the URL>/<file
  name>``; the URL's fragment, and a ``file://`` URL's query, left out),
  beside a record ``<file name>.json`` of the URL and the file's sha256
  and md5. Every reuse checks the file against that record, so a file
  of the same name from another URL, or one changed since, is never
  taken. With ``HF_HUB_OFFLINE=1`` an ``http(s)`` URL is read from that
  cache only.
  Hashes the URL pins (:func:`url_file`) are checked before the download
  is kept and on every reuse: a fragment ``#sha256=<hex>`` (the full
  hash or a prefix of at least 8 digits) and/or ``#md5=<32 hex>`` (what
  Zenodo lists), or else torch.hub's naming convention
  ``<name>-<hex>.<ext>`` (a sha256 prefix, as in
  ``resnet18-f37072fd.pth``). A mismatch is an error, never a silent
  reload.

A string that is none of these, or that names a source which cannot be
had (offline and not cached, 404, bad hash ...), raises
:class:`WeightsUnavailableError`, saying how to get the weights or to
train from random weights with ``--use_pretrained False``. Nothing falls
back to random weights.

The record, a JSON-able dict that the :class:`~speechbrain_rsc.models.
pretrained.Pretrainer` sets as the model's ``weights_source``:

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
                   code's ``load_sl_official_weights`` fetches from),
                   md5 pinned (:data:`CNN6_MD5`)
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
('Cnn6_mAP=0.343.pth', {'md5': 'e25e26b84585b14c7754c91e48efc9be'})
"""

import hashlib
import http.client
import json
import logging
import math
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

from speechbrain_rsc.atomic import write_atomically, write_text_atomically
from speechbrain_rsc.errors import RecipeError
from speechbrain_rsc.hashing import file_hash, sha256_file
from speechbrain_rsc.models.checkpoints import find_weights_file

logger = logging.getLogger(__name__)

CLAP_SOURCE = "laion/clap-htsat-unfused"
AST_SOURCE = "MIT/ast-finetuned-audioset-10-10-0.4593"
# The md5 that the PANNs Zenodo record lists for Cnn6_mAP=0.343.pth, as
# pinned by code that checks that file (e.g. Labbeti/dcase2022task6a's
# PANN_PRETRAINED_URLS, for the record's later version 3987831, whose
# files keep their names and checksums). Zenodo publishes md5 only; the
# sha256 is recorded at the first download.
CNN6_MD5 = "e25e26b84585b14c7754c91e48efc9be"
CNN6_SOURCE = (
    "https://zenodo.org/record/3960586/files/Cnn6_mAP%3D0.343.pth?download=1"
    f"#md5={CNN6_MD5}"
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
# Hashes a URL may pin: a sha256 (or a prefix of 8 digits or more), an md5.
PINS = {"sha256": (8, 64), "md5": (32, 32)}
# Seconds a URL download waits for a connection or for each block.
DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_TIMEOUT_VARIABLE = "RSC_DOWNLOAD_TIMEOUT"
# Seconds each hub request waits (huggingface_hub's variable and default).
HUB_TIMEOUT = 10.0
HUB_TIMEOUT_VARIABLE = "HF_HUB_ETAG_TIMEOUT"
COMMIT = re.compile(r"[0-9a-f]{40}")
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
    """The file name of ``url`` and the hashes it pins, by algorithm.

    Example
    -------
    >>> url_file("https://x.org/w/resnet18-f37072fd.pth")
    ('resnet18-f37072fd.pth', {'sha256': 'f37072fd'})
    >>> url_file("file:///tmp/w.pth#sha256=" + "ab" * 32)[1]["sha256"][:6]
    'ababab'
    """
    split = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(split.path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{url}: the URL names no file to save")
    fragment = urllib.parse.parse_qs(split.fragment)
    pins = {}
    for algorithm, (least, most) in PINS.items():
        if algorithm in fragment:
            value = fragment[algorithm][0].lower()
            if not re.fullmatch(f"[0-9a-f]{{{least},{most}}}", value):
                digits = least if least == most else f"{least} to {most}"
                raise ValueError(
                    f"{url}: {algorithm} must be {digits} hex digits, got "
                    f"'{value}'"
                )
            pins[algorithm] = value
    match = NAME_HASH.search(name)
    if match and "sha256" not in pins:
        pins["sha256"] = match.group(1)
    return name, pins


def fetched_url(url):
    """The URL as fetched: no fragment; for ``file://``, no query either
    (urllib would read it as part of the file name).

    Example
    -------
    >>> fetched_url("file:///w/a.pth?download=1#md5=" + "0" * 32)
    'file:///w/a.pth'
    """
    split = urllib.parse.urlsplit(url)._replace(fragment="")
    if split.scheme.lower() == "file":
        split = split._replace(query="")
    return urllib.parse.urlunsplit(split)


def url_cache_path(url):
    """Where ``url``'s file is kept: a folder per fetched URL in torch.hub's
    cache (``$TORCH_HOME/hub``, read when called), so that two URLs
    serving files of the same name never share one.

    Example
    -------
    >>> a = url_cache_path("https://a.org/w.pth#md5=" + "0" * 32)
    >>> b = url_cache_path("https://b.org/w.pth")
    >>> a.name == b.name == "w.pth", a.parent != b.parent
    (True, True)
    >>> a == url_cache_path("https://a.org/w.pth")  # the pins are no key
    True
    """
    import torch.hub

    fetch = fetched_url(url)
    key = hashlib.sha256(fetch.encode()).hexdigest()[:16]
    name, _ = url_file(url)
    return Path(torch.hub.get_dir()) / "checkpoints" / "by_url" / key / name


def _record_path(dest):
    return dest.with_name(dest.name + ".json")


def _mismatches(hashes, pins):
    """The pins that ``hashes`` (full digests) break, as words.

    Example
    -------
    >>> _mismatches({"md5": "ab" * 16}, {"md5": "cd" * 16})
    ['md5 abababababababababababababababab, expected cdcd...']
    """
    return [
        f"{algorithm} {hashes[algorithm]}, expected {pin[:4]}..."
        for algorithm, pin in pins.items()
        if not hashes[algorithm].startswith(pin)
    ]


def seconds_from_env(name, default):
    """A timeout in seconds from environment variable ``name``, as set when
    called; ``default`` when unset or empty.

    Example
    -------
    >>> seconds_from_env("RSC_NO_SUCH_VARIABLE", 30.0)
    30.0
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise RecipeError(
            f"{name}={value!r} is not a timeout: give a number of seconds "
            "greater than 0, or unset it for the default"
        )
    return seconds


class DownloadError(Exception):
    """A download that failed or that did not match its pinned hashes;
    never a failure to write the file (:func:`~speechbrain_rsc.atomic.
    write_atomically` reports those with the free space).
    """


def _blocks(url, timeout):
    """The content of ``url`` in blocks, every wait bounded by ``timeout``."""
    request = urllib.request.Request(
        url, headers={"User-Agent": "speechbrain-rsc"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while block := response.read(1 << 20):
                yield block
    except (OSError, http.client.HTTPException) as error:
        # URLError, HTTPError, timeouts and resets are OSErrors.
        raise DownloadError(f"{type(error).__name__}: {error}") from error


def download_url(url, dest, pins=None, timeout=None):
    """Download ``url`` to ``dest``: streamed to a temporary file beside it,
    hashed on the way, checked against ``pins``, then renamed, so ``dest``
    is either absent or whole and checked.

    Arguments
    ---------
    url : str
        ``http(s)://`` or ``file://``.
    dest : str or Path
    pins : dict, optional
        Expected hashes by algorithm (``sha256`` may be a prefix).
    timeout : float, optional
        Seconds to wait for the connection and for each block; default
        ``RSC_DOWNLOAD_TIMEOUT`` or :data:`DOWNLOAD_TIMEOUT`.

    Returns
    -------
    dict
        The file's ``sha256`` and ``md5``.

    Raises
    ------
    DownloadError
        On a network error, a timeout or a hash mismatch (nothing kept).

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a").write_bytes(b"")
    >>> download_url(f"file://{folder}/a", folder / "b")["md5"]
    'd41d8cd98f00b204e9800998ecf8427e'
    >>> download_url(f"file://{folder}/a", folder / "c", {"md5": "0" * 32})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    speechbrain_rsc.models.weights.DownloadError: the file downloaded from \
file://.../a has md5 d41d8cd98f00b204e9800998ecf8427e, expected 0000...
    """
    pins = pins or {}
    if timeout is None:
        timeout = seconds_from_env(DOWNLOAD_TIMEOUT_VARIABLE, DOWNLOAD_TIMEOUT)
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}

    def write(tmp):
        with open(tmp, "wb") as out:
            for block in _blocks(url, timeout):
                for digest in digests.values():
                    digest.update(block)
                out.write(block)
        hashes = {name: digest.hexdigest() for name, digest in digests.items()}
        wrong = _mismatches(hashes, pins)
        if wrong:
            raise DownloadError(
                f"the file downloaded from {url} has {'; '.join(wrong)}"
            )
        return hashes

    result = {}
    write_atomically(dest, lambda tmp: result.update(write(tmp)))
    return result


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


_HUB_WAIT = {"seconds": HUB_TIMEOUT}


def _bound_request(request):
    """An httpx request hook: no wait of ``request`` without a limit."""
    limits = dict(request.extensions.get("timeout") or {})
    for name in ("connect", "read", "write", "pool"):
        if limits.get(name) is None:
            limits[name] = _HUB_WAIT["seconds"]
    request.extensions["timeout"] = limits


def _with_bounded_requests(client):
    if not getattr(client, "rsc_bounded", False):
        hooks = client.event_hooks
        client.event_hooks = {
            **hooks,
            "request": [*hooks.get("request", []), _bound_request],
        }
        client.rsc_bounded = True
    return client


def _bound_hub_requests(timeout):
    """Bound every wait of huggingface_hub's HTTP requests by ``timeout``.

    huggingface_hub passes a timeout to file requests only; the others
    (``repo_info``, the file listing of ``snapshot_download``) pass
    ``timeout=None``, which waits forever on a proxy that holds
    connections. A request hook on its shared client (and on those its
    client factory makes from now on) fills in every missing limit.
    """
    from huggingface_hub import get_session, set_client_factory
    from huggingface_hub.utils import _http

    _HUB_WAIT["seconds"] = timeout
    current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if current is not None and not getattr(current, "rsc_bounded", False):

        def bounded():
            return _with_bounded_requests(current())

        bounded.rsc_bounded = True
        set_client_factory(bounded)
    _with_bounded_requests(get_session())


def hub_snapshot(repo_id, revision=None, cache_dir=None, complete=None, **kw):
    """The snapshot folder of a hub repository, no network wait unbounded.

    With ``HF_HUB_OFFLINE=1``, only the cache is read. A ``revision``
    pinned to a commit hash whose snapshot is cached (and passes
    ``complete``) never touches the network. Otherwise
    ``snapshot_download`` asks the hub, every request bounded by
    ``HF_HUB_ETAG_TIMEOUT`` (read when called, default
    :data:`HUB_TIMEOUT` s) and huggingface_hub's own retries; a hub that
    does not answer falls back to the cached snapshot, if any.

    Arguments
    ---------
    repo_id : str
    revision : str, optional
        Branch, tag or commit hash.
    cache_dir : str, optional
        Default ``HF_HUB_CACHE`` as set when called.
    complete : callable, optional
        ``complete(folder)``: whether a cached snapshot is enough.
    **kw
        ``allow_patterns`` / ``ignore_patterns`` of ``snapshot_download``.

    Raises
    ------
    FileNotFoundError
        huggingface_hub's ``LocalEntryNotFoundError``: neither the hub
        (offline, or no answer) nor the cache has it; or the hub's own
        errors (no such repository or revision ...).

    Example
    -------
    >>> import os, tempfile
    >>> os.environ["HF_HUB_OFFLINE"] = "1"
    >>> hub_snapshot("org/absent", cache_dir=tempfile.mkdtemp())
    Traceback (most recent call last):
    huggingface_hub.errors.LocalEntryNotFoundError: Cannot find ...
    """
    from huggingface_hub import snapshot_download

    kw.update(
        repo_id=repo_id,
        revision=revision,
        cache_dir=cache_dir or os.environ.get("HF_HUB_CACHE") or None,
    )
    offline = _offline()
    if offline or (revision and COMMIT.fullmatch(revision)):
        try:
            folder = snapshot_download(**kw, local_files_only=True)
        except FileNotFoundError:
            if offline:
                raise
        else:
            if offline or complete is None or complete(folder):
                return folder
    timeout = seconds_from_env(HUB_TIMEOUT_VARIABLE, HUB_TIMEOUT)
    _bound_hub_requests(timeout)
    return snapshot_download(
        **kw,
        etag_timeout=timeout,
        endpoint=os.environ.get("HF_ENDPOINT") or None,
    )


def _has_weights(folder):
    return find_weights_file(folder) is not None


def _from_hub(source, repo_id, revision, backbone, cache_dir):
    offline = _offline()
    try:
        folder = hub_snapshot(
            repo_id,
            revision,
            cache_dir,
            _has_weights,
            ignore_patterns=HUB_PICKLES + HUB_IGNORED,
        )
        if not _has_weights(folder) and not offline:
            folder = hub_snapshot(
                repo_id,
                revision,
                cache_dir,
                _has_weights,
                allow_patterns=HUB_PICKLES,
            )
    except Exception as error:
        rev = f" --revision {revision}" if revision else ""
        where = (
            cache_dir
            or os.environ.get("HF_HUB_CACHE")
            or "the default hub cache (HF_HUB_CACHE)"
        )
        offline_note = (
            " (HF_HUB_OFFLINE=1: the cache only)"
            if offline
            else f" (each hub request waits at most {HUB_TIMEOUT_VARIABLE}"
            f"={seconds_from_env(HUB_TIMEOUT_VARIABLE, HUB_TIMEOUT):g} s; "
            "without network, set HF_HUB_OFFLINE=1)"
        )
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


def _cached_hashes(dest, fetch, pins):
    """The hashes of the file kept for ``fetch`` at ``dest``, checked
    against its download record; ``None`` when there is no such file
    (or no record of it: an interrupted download, fetched again).

    Raises
    ------
    DownloadError
        When the file changed since its download, or breaks ``pins``.
    """
    try:
        recorded = json.loads(_record_path(dest).read_text())
    except (OSError, ValueError):
        return None
    if not dest.is_file() or recorded.get("url") != fetch:
        return None
    hashes = {"sha256": sha256_file(dest)}
    if hashes["sha256"] != recorded.get("sha256"):
        raise DownloadError(
            f"the cached {dest} has sha256 {hashes['sha256']}, but "
            f"{recorded.get('sha256')} was downloaded from {fetch}: it "
            "changed since"
        )
    if "md5" in pins:
        hashes["md5"] = file_hash(dest, "md5")
    wrong = _mismatches(hashes, pins)
    if wrong:
        raise DownloadError(
            f"the cached {dest}, downloaded from {fetch}, has "
            f"{'; '.join(wrong)} (the URL pins another file)"
        )
    return hashes


def _from_url(source, backbone):
    name, pins = url_file(source)
    fetch = fetched_url(source)
    dest = url_cache_path(source)
    ways = (
        f"download it (e.g. `curl -L -o '{name}' '{fetch}'`), check it, "
        "and set pretrained_path to that file"
    )
    try:
        hashes = _cached_hashes(dest, fetch, pins)
    except DownloadError as error:
        raise _unavailable(
            backbone,
            source,
            str(error),
            f"delete {dest.parent} and retry, or {ways}",
        ) from error
    if hashes is None:
        remote = urllib.parse.urlsplit(fetch).scheme.lower() != "file"
        if remote and _offline():
            raise _unavailable(
                backbone,
                source,
                f"HF_HUB_OFFLINE=1 and it is not in the download cache "
                f"({dest})",
                f"run once with network access (without HF_HUB_OFFLINE) "
                f"to fill that cache, or {ways}",
            )
        timeout = seconds_from_env(DOWNLOAD_TIMEOUT_VARIABLE, DOWNLOAD_TIMEOUT)
        logger.info("Downloading %s to %s", fetch, dest)
        try:
            hashes = download_url(fetch, dest, pins, timeout)
        except DownloadError as error:
            raise _unavailable(
                backbone,
                source,
                f"download failed ({error}; every wait is bounded by "
                f"{DOWNLOAD_TIMEOUT_VARIABLE}={timeout:g} s)",
                ways,
            ) from error
        record = {"url": fetch, **hashes, "bytes": dest.stat().st_size}
        write_text_atomically(
            _record_path(dest), lambda file: json.dump(record, file)
        )
    return str(dest), _record(source, "url", dest)


def _with_equals_signs(path):
    """The existing file that ``path`` names with its spaces read as
    ``=``, or None (see :func:`resolve_weights`).

    Example
    -------
    >>> _with_equals_signs(Path("/nonexistent/Cnn6_mAP 0.343.pth")) is None
    True
    """
    if " " not in path.name:
        return None
    candidate = path.with_name(path.name.replace(" ", "="))
    return candidate if candidate.exists() else None


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
    mangled = _with_equals_signs(local)
    if mangled is not None:
        raise _unavailable(
            backbone,
            source,
            f"no such file, but there is {mangled}: SpeechBrain's command "
            "line turns every '=' of a value into a space (PANNs names its "
            "files Cnn6_mAP=0.343.pth)",
            "rename the file without '=' and pass that name, or set "
            "pretrained_path in the YAML itself",
        )
    raise _unavailable(
        backbone,
        source,
        "no such local file or folder (and not a hub ID org/name nor an "
        "http(s):// or file:// URL)",
        "put the weights there or set pretrained_path to where they are",
    )
