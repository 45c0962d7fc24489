# sentry-remediation-bot: the scheduler (`sentry-bot run`) as a non-root container.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BOT_DATABASE_URL=sqlite:////data/bot.db BOT_PLAYBOOKS_DIR=/app/playbooks
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /data /app/playbooks && chown -R bot /data
WORKDIR /app
COPY --chown=root:root playbooks ./playbooks
USER bot
VOLUME ["/data"]
# Healthy while the scheduler's heartbeat file is fresh (written every loop).
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["sentry-bot", "health"]
ENTRYPOINT ["sentry-bot"]
CMD ["run"]
