"""statistics: the city's figures (the programme's statistics), a read model fed by the five
services' logs exactly once; its gRPC face (qiji.statistics.v1) and its exports."""
