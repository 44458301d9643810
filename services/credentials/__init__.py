"""The public credentials face: what anyone outside the city needs to check a Qiji credential
(issuer profiles, keys, achievements, images, status lists, a verification page), over HTTP
with no token. A reader: everything comes from badges' gRPC API."""
