"""Neural building blocks of Joyful, one operator per module."""
