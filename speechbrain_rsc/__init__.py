"""speechbrain-rsc: respiratory sound classification on ICBHI 2017.

Teacher ensembles trained on hard labels are distilled into one student
with soft labels, for any backbone (CNN6, ResNet18, EfficientNet-B0, AST,
Audio-CLAP, BTS).
"""

__version__ = "0.1.0"
