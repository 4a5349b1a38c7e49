# The application image: `pingan worker`, `pingan api` and `pingan simulate` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Local state (the worker's faust tables); the services themselves are external in this image.
    PINGAN_DATA_DIR=/home/pingan/data

RUN useradd --create-home --uid 10001 --user-group pingan

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pingan ./pingan
COPY streams ./streams
COPY producers ./producers
COPY api ./api
COPY schemas ./schemas
# The live map page (GET /) and its vendored ECharts.
COPY web ./web
COPY deploy ./deploy
# Editable on purpose: the code finds deploy/ (migrations, risk index config, grid registry) next to the
# package, which a plain `pip install .` would move into site-packages without it.
RUN pip install -e . && python -c "import pingan.cli, pingan.streams.worker, pingan.api.app, pingan.producers.simulator"

USER pingan
RUN mkdir -p /home/pingan/data
EXPOSE 8000
ENTRYPOINT ["pingan"]
CMD ["--help"]
