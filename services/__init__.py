"""Qiji's services; each has the same shape: domain/, application.py, views.py, grpc_api.py."""
