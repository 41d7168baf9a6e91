# One image for every Gatehouse process; docker-compose.yml picks the role with the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY gatehouse gatehouse
COPY services services
COPY gateway_xds gateway_xds
COPY cli cli
COPY migrations migrations
RUN pip install --no-cache-dir grpcio-tools \
    && python -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. protos/gatehouse/v1/*.proto \
    && pip install --no-cache-dir .
# Not root: nothing a control-plane process does needs it (Kubernetes runs it with runAsNonRoot).
RUN useradd --system --uid 10001 --home-dir /data --create-home gatehouse
USER 10001
ENV GATEHOUSE_HOME=/data GATEHOUSE_API_HOST=0.0.0.0 GATEHOUSE_XDS_HOST=0.0.0.0 PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["gatehouse"]
