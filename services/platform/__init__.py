"""The platform company's event feed gateway: one CloudEvents feed across all five services."""
