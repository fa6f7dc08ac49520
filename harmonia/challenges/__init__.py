"""Synthetic human-vs-DNN challenges: seeded generators registered by name.

``create(name, seed=0, **knobs)`` returns an indexable generator; ``names()`` lists them.
"""

from harmonia.challenges.base import CHALLENGES, Challenge, create, names

__all__ = ["CHALLENGES", "Challenge", "create", "names"]
