"""gRPC plumbing shared by every service: server factory, guard (auth, context, errors), feed."""
