"""wss: PseudoSeg (Zou et al., ICLR 2021) for TensorFlow 2 and Keras 3.

Subpackages and modules are imported lazily by their users so that
`import wss` stays cheap; see README.md for the module map.
"""

__version__ = "0.1.0"
