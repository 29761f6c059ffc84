"""Learning-rate schedules that depend only on the epoch number.

Being stateless, they need no checkpointing: a resumed run gets the same
rate for the same epoch.

Example
-------
>>> schedule = CosineAnnealing(lr=1e-3, n_epochs=4)
>>> [round(schedule(e), 6) for e in (1, 3, 5)]
[0.001, 0.0005, 0.0]
"""

import math


class CosineAnnealing:
    """Cosine decay from ``lr`` (epoch 1) towards ``lr_min``, once per epoch.

    Arguments
    ---------
    lr : float
        Rate of the first epoch.
    n_epochs : int
        Number of epochs of the decay.
    lr_min : float
        Floor of the rate.
    """

    def __init__(self, lr, n_epochs, lr_min=0.0):
        self.lr = lr
        self.n_epochs = max(int(n_epochs), 1)
        self.lr_min = lr_min

    def __call__(self, epoch):
        """Learning rate of ``epoch`` (1-based)."""
        progress = min(max(epoch - 1, 0) / self.n_epochs, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr_min + (self.lr - self.lr_min) * cosine
