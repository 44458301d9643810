# One image for every Qiji process; the command picks the service.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 qiji
WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY protos ./protos
# protos/google is vendored for callers in other languages; Python has those modules from the
# pinned googleapis-common-protos package, so they are not generated again (as in the Makefile).
RUN pip install --no-cache-dir '.[dev]' \
 && mkdir -p build/gen \
 && python -m grpc_tools.protoc -Iprotos --python_out=build/gen --grpc_python_out=build/gen \
      $(find protos -name '*.proto' -not -path 'protos/google/*') \
 && chown -R qiji /app
ENV PYTHONPATH=/app:/app/build/gen \
    QIJI_GRPC_HOST=0.0.0.0 \
    QIJI_DATA_DIR=/var/lib/qiji
USER qiji
CMD ["python", "-m", "services.identity"]
