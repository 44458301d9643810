"""The merchants domain: pure Python, no gRPC, SQL or AMQP."""
