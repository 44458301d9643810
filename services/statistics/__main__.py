"""`python -m services.statistics`: the city's figures, until SIGTERM/SIGINT."""
from services.statistics.service import serve
from shared.logging import exits_on_config_error

if __name__ == "__main__":
    with exits_on_config_error("statistics"):
        serve()
