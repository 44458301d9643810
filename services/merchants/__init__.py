"""merchants — friendly merchants (友好商户), perks with quotas and single-use codes, and care
packages (关爱礼包)."""
