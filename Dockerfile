# syntax=docker/dockerfile:1
# The collector image: `docker build -t collector .`, then `docker run collector run -i ... -o ...`.
# Stage one builds the project's wheel and its dependencies' wheels; stage two installs them
# from that folder alone (no index, no compiler, no build tools) and runs as uid 65532, so a
# cluster's runAsNonRoot check passes from the image's numeric USER. Every instruction is in
# exec form: nothing needs a shell when the container runs.

FROM python:3.12-slim AS build
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest of the tree out).
COPY pyproject.toml README.md ./
COPY collector ./collector
RUN ["pip", "wheel", "--no-cache-dir", "--wheel-dir", "/wheels", "."]

FROM python:3.12-slim
# No .pyc written at run time: the root file system is read-only in the cluster, and pip
# compiled the package when it installed it. Logs reach the pod's log unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels are bind-mounted for this one step, so they leave no layer behind. DL3013 asks
# for pinned versions: --no-index already pins them, to exactly the wheels stage one built.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    ["pip", "install", "--no-cache-dir", "--no-index", "--find-links", "/wheels", "collector"]
# 65532, the "nonroot" uid of distroless images; numeric, so the kubelet can check it is not 0.
USER 65532:65532
WORKDIR /
ENTRYPOINT ["collector"]
CMD ["--help"]
