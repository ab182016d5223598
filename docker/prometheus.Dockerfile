# Prometheus for compose.yaml's `monitoring` profile, from Debian's `prometheus` package on
# the same base image as the suite (BASE: python:3.11-slim, Debian bookworm, for real users;
# scripts/compose-up.sh's local debootstrap bookworm image on this project's machine), so
# no registry image is needed. The build runs apt-get: it needs a Debian mirror (unless the
# base image already holds the package). Configuration and rules are mounted by compose.yaml
# from monitoring/prometheus/.
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN if ! command -v prometheus >/dev/null; then \
        apt-get update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            prometheus \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
 && prometheus --version
USER prometheus
WORKDIR /var/lib/prometheus
EXPOSE 9090
ENTRYPOINT ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", \
            "--storage.tsdb.path=/var/lib/prometheus/metrics2", \
            "--web.listen-address=0.0.0.0:9090"]
