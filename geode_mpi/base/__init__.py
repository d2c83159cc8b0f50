"""Layer 0, base: pure Python used at every level above (no numpy, no mpi4py).

The thread gate, the wait loops' back-off, launcher facts, rank labels and last words, and tree
arithmetic over ranks live here, beside the exceptions (`geode_mpi.errors`) and the Message
class (`geode_mpi.message`): the transport builds on them, and so do delivery and the core,
which never import the transport's own modules.
"""
