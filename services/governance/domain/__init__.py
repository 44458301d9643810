"""The governance domain: pure Python, no gRPC, SQL or AMQP."""
