"""Pretrained weights through SpeechBrain's ``Pretrainer``.

A recipe YAML declares the model with ``!new:`` and its weights with a
:class:`Pretrainer`; the script runs ``collect_files`` on the main
process, then ``load_collected`` on every process, which calls each
model's transfer hook (``load_pretrained``, marked with
``speechbrain.utils.checkpoints.mark_as_transfer``): PANNs keys for
CNN6, the RGB-summed first convolution for the timm CNNs, the position
crop for AST, LAION's key names for CLAP. Loading the YAML fetches
nothing.

:class:`Pretrainer` is SpeechBrain's with one change: ``collect_files``
fetches with :func:`~speechbrain_rsc.models.weights.resolve_weights`
rather than ``speechbrain.utils.fetching.fetch``, because AST, Audio-CLAP
and BTS need a whole hub snapshot (config, weights, tokenizer) where
``fetch`` brings one file, and because ``resolve_weights`` checks the
hashes a source pins and bounds every network wait. As SpeechBrain does,
it links ``<collect_in>/<key>.ckpt`` to what it fetched (a file or a
snapshot folder), so that the other DDP processes load the same
weights, beside ``<key>.source.json``: the record of the source, which
``load_collected`` sets as the model's ``weights_source``.

A path of None is the backbone's default source, the paper's
(:data:`~speechbrain_rsc.models.weights.DEFAULT_SOURCES`); a loadable
whose condition is false (``use_pretrained: False``) is left with its
random weights.

Example
-------
>>> import tempfile, torch
>>> from speechbrain_rsc.models.cnn6 import CNN6
>>> source = CNN6(channels=[4, 8, 8, 16])
>>> path = tempfile.mkdtemp() + "/panns.pth"
>>> torch.save({"model": source.state_dict()}, path)
>>> model = CNN6(channels=[4, 8, 8, 16])
>>> pretrainer = Pretrainer(loadables={"model": model},
...                         paths={"model": path})
>>> model.pending_weights == path
True
>>> _ = pretrainer.collect_files()
>>> pretrainer.load_collected()
>>> torch.equal(model.fc1.weight, source.fc1.weight)
True
>>> model.weights_source["kind"], model.pending_weights
('path', None)
"""

import json
import os
from pathlib import Path

from speechbrain.utils import parameter_transfer
from speechbrain.utils.checkpoints import PARAMFILE_EXT

from speechbrain_rsc.atomic import write_text_atomically
from speechbrain_rsc.models.weights import DEFAULT_SOURCES, resolve_weights

RECORD_SUFFIX = ".source.json"


class Pretrainer(parameter_transfer.Pretrainer):
    """SpeechBrain's ``Pretrainer``, fetching with ``resolve_weights``.

    Arguments are those of ``speechbrain.utils.parameter_transfer.
    Pretrainer``; a path is a local file or folder, a hub ID
    ``org/name[@revision]`` or an ``http(s)://``/``file://`` URL, or
    None for the loadable's default source. Every loadable to load is
    marked ``pending_weights`` (its source) until ``load_collected``, so
    that a Brain refuses a model whose declared weights were never
    loaded.
    """

    def __init__(
        self,
        collect_in=None,
        loadables=None,
        paths=None,
        custom_hooks=None,
        conditions=None,
    ):
        super().__init__(collect_in, loadables, paths, custom_hooks, conditions)
        self.records = {}
        for name, obj in self._to_load():
            obj.pending_weights = self.source_of(name)

    def _to_load(self):
        return [
            (name, obj)
            for name, obj in self.loadables.items()
            if self.is_loadable(name)
        ]

    def source_of(self, name, default_source=None):
        """Where the weights of loadable ``name`` come from: its path,
        else ``default_source``, else its backbone's default.

        Raises
        ------
        ValueError
            No source at all.
        """
        source = self.paths.get(name) or default_source
        if source is None:
            backbone = getattr(self.loadables[name], "backbone_name", None)
            source = DEFAULT_SOURCES.get(backbone)
        if source is None:
            raise ValueError(
                f"pretrained weights are declared for '{name}' but no path "
                "is given and it has no default source: set "
                "pretrained_path, or use_pretrained: False"
            )
        return str(source)

    def collect_files(self, default_source=None, **_speechbrain_fetch_opts):
        """Fetch every loadable's weights (see the module docstring).

        Returns
        -------
        dict
            Loadable key -> local file or folder.

        Raises
        ------
        WeightsUnavailableError
            Naming the backbone, the source and the ways out.
        """
        loading = self._to_load()
        if loading and self.collect_in is not None:
            self.collect_in.mkdir(parents=True, exist_ok=True)
        collected = {}
        for name, obj in loading:
            backbone = getattr(obj, "backbone_name", None) or name
            path, record = resolve_weights(
                self.source_of(name, default_source), backbone=backbone
            )
            if self.collect_in is not None:
                self._link(name, Path(path).resolve(), record)
            self.paths[name] = path
            self.is_local.append(name)
            self.records[name] = record
            collected[name] = path
        return collected

    def _link(self, name, target, record):
        link = self.collect_in / f"{name}{PARAMFILE_EXT}"
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=target.is_dir())
        os.replace(tmp, link)
        write_text_atomically(
            self.collect_in / f"{name}{RECORD_SUFFIX}",
            lambda file: json.dump(record, file, indent=2),
        )

    def load_collected(self):
        """Call each loadable's transfer hook on its collected weights
        (SpeechBrain's ``load_collected``) and set its ``weights_source``;
        nothing to do when no loadable is to be loaded.
        """
        loading = self._to_load()
        if not loading:
            return
        super().load_collected()
        for name, obj in loading:
            record = self.records.get(name)
            if record is None:  # collected by the main process
                path = self.collect_in / f"{name}{RECORD_SUFFIX}"
                record = json.loads(path.read_text(encoding="utf-8"))
            obj.weights_source = record
            obj.pending_weights = None
