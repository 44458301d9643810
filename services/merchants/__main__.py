"""`python -m services.merchants`: run the merchants service until SIGTERM/SIGINT."""

from services.merchants.service import SPEC
from shared.grpc.server import serve

if __name__ == "__main__":
    serve(SPEC)
