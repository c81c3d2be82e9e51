"""The store: Outpost's only door to its database."""

from relay.store.sqlite import *  # noqa: F403
