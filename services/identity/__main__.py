"""`python -m services.identity`: run the identity service until SIGTERM/SIGINT."""

from services.identity.service import SPEC
from shared.grpc.server import serve

if __name__ == "__main__":
    serve(SPEC)
