"""`python -m services.relay`: the relay process."""
from services.relay.relay import serve

if __name__ == "__main__":
    serve()
