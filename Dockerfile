# gpuops: one image for every role (api, worker, beat, migration job, the twin).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gpuops gpuops
COPY entrypoints entrypoints
COPY evaluation evaluation
COPY domain domain
COPY agent agent
COPY detectors detectors
COPY runbooks runbooks
COPY connectors connectors
COPY simulator simulator
COPY migrations migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /srv/gpuops --create-home gpuops
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /srv/gpuops
ENV GPUOPS_LOG_FORMAT=json \
    GPUOPS_API_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["gpuops"]
CMD ["--help"]
