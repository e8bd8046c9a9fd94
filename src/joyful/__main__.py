"""``python -m joyful``: the command line, also as torchrun starts it (``torchrun … -m joyful train …``)."""

from joyful.cli import main

main()
