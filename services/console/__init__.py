"""The console: read-only web pages for the social-work department and operators — the city's
figures by area, period and place (city → district → street → community), "as of" a moment,
audit trails of a report or a rider, exports — over Qiji's gRPC APIs only, with the caller's
own token (its scope is whatever the services answer for it)."""
