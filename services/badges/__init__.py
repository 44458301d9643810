"""badges — volunteer service, badge classes and awards (not built yet: only its contract)."""
