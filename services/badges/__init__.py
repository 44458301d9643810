"""badges — volunteer service (爱心公益), badge classes with versioned criteria, automatic and
manual awards, and Open Badges 3.0 credentials verifiable outside the city."""
