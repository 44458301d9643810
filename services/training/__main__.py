"""`python -m services.training`: run the training service until SIGTERM/SIGINT."""

from services.training.service import SPEC
from shared.grpc.server import serve

if __name__ == "__main__":
    serve(SPEC)
