"""`python -m shared.grpc.health_probe ADDRESS`: exit 0 when the Qiji service at ADDRESS reports
SERVING on grpc.health.v1, 1 otherwise. For container health checks and Kubernetes exec probes
where the port serves TLS (Kubernetes' own gRPC probe speaks plaintext only). It dials with the
same TLS_* settings as the service beside it (`--service` picks its `<SERVICE>_TLS_*` names)."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.config import ConfigError, load_settings
from shared.grpc.channels import open_channel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.grpc.health_probe",
                                     description=__doc__)
    parser.add_argument("address", help="host:port, e.g. 127.0.0.1:50051")
    parser.add_argument("--service", default="qiji",
                        help="whose settings to dial with (default: the QIJI_* ones)")
    parser.add_argument("--check", default="", metavar="NAME",
                        help="a service name to ask about (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.service)
        with open_channel(args.address, settings) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks Check
                health_pb2.HealthCheckRequest(service=args.check), timeout=args.timeout)
    except ConfigError as error:
        print(f"configuration: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"{args.address}: {error.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
