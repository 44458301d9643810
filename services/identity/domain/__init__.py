"""The identity domain: pure Python, no gRPC, SQL or AMQP."""
