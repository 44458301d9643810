"""The badges domain: pure Python, no gRPC, SQL or AMQP."""
