FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml ./
COPY shared ./shared
COPY producer ./producer
COPY consumer ./consumer
RUN pip install .

# Run unprivileged: the services need no file system writes.
RUN useradd --system --uid 10001 odds
USER odds

CMD ["python", "-m", "consumer", "run"]
