# sentry-remediation-bot: `sentry-bot serve` (HTTP + scheduler) as a non-root container.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# Everything the bot writes lives under the /data volume (the only writable place for
# the non-root user): the SQLite state store and the post-incident reports.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BOT_DATABASE_URL=sqlite:////data/bot.db BOT_REPORTS_DIR=/data/reports \
    BOT_PLAYBOOKS_DIR=/app/playbooks
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /data/reports /app/playbooks && chown -R bot /data
WORKDIR /app
COPY --chown=root:root playbooks ./playbooks
USER bot
VOLUME ["/data"]
EXPOSE 8080
# Healthy while the HTTP server answers /healthz (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["sentry-bot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
