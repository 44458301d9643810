"""`python -m services.badges`: run the badges service until SIGTERM/SIGINT."""

from services.badges.service import SPEC
from shared.grpc.server import serve

if __name__ == "__main__":
    serve(SPEC)
