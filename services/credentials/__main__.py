"""`python -m services.credentials`: serve the public credentials face until SIGTERM/SIGINT."""

from services.credentials.service import serve

if __name__ == "__main__":
    serve()
