# One image for every Qiji process; the command picks the service.

# The console's one run-time asset from npm, Apache ECharts (the version package-lock.json
# pins), vendored into the image at build time: the console never loads it from a CDN.
FROM node:20-slim AS console-assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && mkdir -p build/console \
 && cp node_modules/echarts/dist/echarts.min.js node_modules/echarts/LICENSE build/console/

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
COPY --from=console-assets /assets/build/console /app/build/console
ENV PYTHONPATH=/app:/app/build/gen \
    QIJI_GRPC_HOST=0.0.0.0 \
    QIJI_DATA_DIR=/var/lib/qiji
USER qiji
CMD ["python", "-m", "services.identity"]
