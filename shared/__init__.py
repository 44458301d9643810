"""Qiji's common kernel: what every service needs, so that a service holds only its domain."""
