"""The relay: publishes every service's public events to RabbitMQ (see relay.py)."""
