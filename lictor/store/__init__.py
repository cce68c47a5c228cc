"""Durable storage behind one contract (see `lictor.store.base`)."""
