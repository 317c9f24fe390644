# runbook in a container: the binary, the playbook library, and the clients
# its step kinds drive (OpenSSH for `ssh`, pg_dump and pg_restore for `pg`).
#
#   docker build -t runbook .
#   docker run --rm -v "$PWD:/work" -w /work \
#     -v "$HOME/.ssh:/home/runbook/.ssh:ro" runbook run rolling-deploy --set release=v42
#
# The library is at /usr/share/runbook/playbooks (RUNBOOK_PLAYBOOKS); a
# runbook.toml or --playbooks in the mounted folder takes precedence. State
# defaults to the user's state folder inside the container: mount one, or use
# --state postgres://... to share it.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p runbook-cli

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/runbook /usr/local/bin/runbook
COPY playbooks /usr/share/runbook/playbooks
COPY schemas /usr/share/runbook/schemas
ENV RUNBOOK_PLAYBOOKS=/usr/share/runbook/playbooks
RUN useradd --create-home --uid 10001 runbook
USER runbook
WORKDIR /home/runbook
ENTRYPOINT ["runbook"]
CMD ["--help"]
