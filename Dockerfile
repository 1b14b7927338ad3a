# billhub: the hub as a container. Build: docker build -t billhub .
# Run: mount the configuration and certificates read-only, e.g.
#   docker run -v /etc/billhub:/etc/billhub:ro -p 8583:8583 -p 9100:9100 billhub
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 billhub \
 && useradd --system --uid 10001 --gid billhub --home-dir /var/lib/billhub --create-home billhub

WORKDIR /opt/billhub
COPY pyproject.toml README.md ./
COPY src ./src
COPY specs ./specs
RUN pip install . && rm -rf /root/.cache

USER billhub
WORKDIR /var/lib/billhub
# 8583: the switch link (mutual TLS). 9100: the admin port (health, metrics).
EXPOSE 8583 9100

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["billhub", "health", "--url", "http://127.0.0.1:9100/healthz"]

ENTRYPOINT ["billhub"]
CMD ["serve", "--config", "/etc/billhub/billhub.toml"]
