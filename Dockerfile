# The hybridgate proxy image: `docker build -t hybridgate:0.1.0 .`
# Runs as an unprivileged user; healthy only when /health/ready says every alias has a
# live backend. The config is baked in at /etc/hybridgate/hybridgate.yaml and can be
# replaced by a mount (compose) or a ConfigMap (Kubernetes).
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY costing ./costing
COPY simulator ./simulator

# litellm is a core dependency: its bundled price table prices API models, and it backs
# `type: litellm` backends (Anthropic, Gemini, Bedrock...), imported only for those.
RUN pip install . \
 && groupadd --system --gid 10001 hybridgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hybridgate

COPY deploy/hybridgate.yaml /etc/hybridgate/hybridgate.yaml

USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:4000/health/ready', timeout=2)"]
ENTRYPOINT ["hybridgate"]
CMD ["serve", "-c", "/etc/hybridgate/hybridgate.yaml"]
