"""`python -m services.console`: serve the console until SIGTERM/SIGINT."""

from services.console.service import serve

if __name__ == "__main__":
    serve()
