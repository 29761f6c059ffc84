"""The training shuffle: an independent order for every (seed, epoch).

SpeechBrain's ``ReproducibleRandomSampler`` seeds epoch ``e`` of a run
with seed ``s`` by ``s + e``, so teacher seed 1 at epoch 2 trains in
exactly the order of teacher seed 2 at epoch 1: teachers meant to be
independent would share all but one of their epoch orders. Here every
(seed, epoch) pair draws its permutation from a generator seeded through
NumPy's ``SeedSequence``, which mixes the pair into unrelated streams.
The order depends on nothing else, so a run resumed mid-epoch (SpeechBrain
skips the batches already seen) repeats the uninterrupted run.

Example
-------
>>> a, b = EpochShuffle(range(6), seed=1), EpochShuffle(range(6), seed=2)
>>> a.set_epoch(2)
>>> b.set_epoch(1)
>>> list(a) != list(b)
True
>>> sorted(a) == list(range(6))
True
"""

import numpy as np
import torch


def epoch_seed(seed, epoch):
    """A 63-bit generator seed for ``(seed, epoch)``, statistically
    independent of every other pair's.

    Example
    -------
    >>> epoch_seed(1, 2) == epoch_seed(1, 2) != epoch_seed(2, 1)
    True
    """
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(
        1, np.uint64
    )
    return int(state[0] >> np.uint64(1))


class EpochShuffle(torch.utils.data.Sampler):
    """A random permutation of ``data_source`` per (seed, epoch).

    Call :meth:`set_epoch` before each epoch (SpeechBrain's ``fit`` does,
    through ``Brain.train_sampler``).

    Arguments
    ---------
    data_source : sized
        The dataset.
    seed : int
        The run's seed.
    """

    def __init__(self, data_source, seed):
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Shuffle for ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.data_source)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.data_source), generator=generator)
        return iter(order.tolist())
