"""`python -m services.platform`: the platform feed gateway, until SIGTERM/SIGINT."""
from services.platform.service import serve
from shared.logging import exits_on_config_error

if __name__ == "__main__":
    with exits_on_config_error("platform"):
        serve()
