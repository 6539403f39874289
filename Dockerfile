# One image for every service: `candlebus up` runs the whole pipeline in one process;
# compose runs each service on its own with `candlebus run <name>`.
FROM python:3.11-slim

# Numba writes compiled kernels to NUMBA_CACHE_DIR: the installed package is not the user's.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/home/candlebus/.cache/numba

RUN useradd --create-home --uid 10001 candlebus

WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
RUN pip install . && rm -rf /src

USER candlebus
WORKDIR /home/candlebus
EXPOSE 8000 9101 9102 9103 9104 9105
# A container's loopback is unreachable from outside: listen on every interface.
CMD ["candlebus", "up", "--host", "0.0.0.0"]
