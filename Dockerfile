# billhub: the hub as a container. Build: docker build -t billhub .
#
# Run: the configuration and certificates read-only in /etc/billhub (start from
# docker/billhub.toml: absolute paths, admin port on 0.0.0.0), the state in the volume
# /var/lib/billhub, the batch billers' folders in /srv/exchange, secrets in the
# environment:
#   docker run -d --name billhub \
#     -v /etc/billhub:/etc/billhub:ro \
#     -v billhub-state:/var/lib/billhub \
#     -v /srv/exchange:/srv/exchange \
#     -e BILLER_0010_TOKEN \
#     -p 8583:8583 -p 127.0.0.1:9100:9100 \
#     billhub
# or `docker compose up -d` with compose.yaml. The admin port answers outside the
# container only with `[admin] host = "0.0.0.0"` (docker/billhub.toml has it); publish
# it on a management address. The volume must be writable by uid 10001.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 billhub \
 && useradd --system --uid 10001 --gid billhub --home-dir /var/lib/billhub --create-home billhub \
 && mkdir -p /etc/billhub /srv/exchange \
 && chown billhub:billhub /var/lib/billhub /srv/exchange

WORKDIR /opt/billhub
# Exact versions (python .ci/lock.py makes the lock, CI checks it is current); pip check
# fails the build if the lock misses a dependency.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
COPY specs ./specs
RUN pip install --no-deps . && pip check && rm -rf /root/.cache

USER billhub
WORKDIR /var/lib/billhub
VOLUME ["/var/lib/billhub"]
# 8583: the switch link (mutual TLS). 9100: the admin port (health, readiness, metrics).
EXPOSE 8583 9100

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["billhub", "health", "--url", "http://127.0.0.1:9100/healthz"]

ENTRYPOINT ["billhub"]
CMD ["serve", "--config", "/etc/billhub/billhub.toml"]
