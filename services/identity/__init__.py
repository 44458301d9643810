"""identity — riders, the organisations of the programme, and service spaces (服务空间)."""
