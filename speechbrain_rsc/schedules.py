"""Learning-rate schedules that depend only on the epoch number.

Being stateless, they need no checkpointing: a resumed run gets the same
rate for the same epoch.

Example
-------
>>> schedule = CosineAnnealing(lr=1e-3, n_epochs=4)
>>> [round(schedule(e), 6) for e in (0, 1, 2, 4)]
[0.001, 0.000854, 0.0005, 0.0]
"""

import math


class CosineAnnealing:
    """Cosine decay from ``lr`` towards ``lr_min``, once per epoch, as the
    reference code's ``adjust_learning_rate`` (Patch-Mix ``misc.py``):
    epoch ``e`` (1-based) trains at
    ``lr_min + (lr - lr_min) * (1 + cos(pi * e / n_epochs)) / 2``, so the
    first epoch is already one step down the curve and the last one
    reaches ``lr_min`` (the recipes set ``lr * 1e-3``, the reference's
    ``lr * lr_decay_rate ** 3``).

    Arguments
    ---------
    lr : float
        Rate at epoch 0 (before the first epoch).
    n_epochs : int
        Number of epochs of the decay.
    lr_min : float
        Rate of the last epoch, and floor after it.
    """

    def __init__(self, lr, n_epochs, lr_min=0.0):
        self.lr = lr
        self.n_epochs = max(int(n_epochs), 1)
        self.lr_min = lr_min

    def __call__(self, epoch):
        """Learning rate of ``epoch`` (1-based)."""
        progress = min(max(epoch, 0) / self.n_epochs, 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr_min + (self.lr - self.lr_min) * cosine
