"""`python -m services.relay`: the relay process."""
from services.relay.relay import serve
from shared.logging import exits_on_config_error

if __name__ == "__main__":
    with exits_on_config_error("relay"):
        serve()
