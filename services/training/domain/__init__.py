"""The training domain: pure Python, no gRPC, SQL or AMQP."""
