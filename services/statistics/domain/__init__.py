"""The figures' pure rules: what each upstream event counts as (facts), the measures' catalogue,
and the city's periods. No gRPC, SQL or AMQP here."""
