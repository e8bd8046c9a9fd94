"""Everything that trains a model: the loop, devices and ranks, ensembles, checkpoints, seeding, logging, adaptation.

:class:`joyful.Joyful` is a facade over these modules; they can be used directly, e.g.
:func:`joyful.training.loop.train` on encoded dialogues.
"""
