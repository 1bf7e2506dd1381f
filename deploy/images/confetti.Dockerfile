# The confetti binary, static, FROM scratch: nothing to pull, nothing but
# the binary and the CA certificates of the build host (for etcd or cache
# nodes over TLS with system roots). It runs as an unprivileged user and
# needs no writable root filesystem: give data (a gateway's snapshot
# directory, key files) volumes of their own.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY confetti /confetti
# Mount points owned by the user, so that a named volume mounted there
# starts writable: /data (a gateway's snapshots, keys init writes).
COPY --chown=65532:65532 data/ /data/
USER 65532:65532
ENTRYPOINT ["/confetti"]
