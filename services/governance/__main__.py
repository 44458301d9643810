"""`python -m services.governance`: run the governance service until SIGTERM/SIGINT."""

from services.governance.service import SPEC
from shared.grpc.server import serve

if __name__ == "__main__":
    serve(SPEC)
